//! Splits a command's stdout and stderr into lines for the [`OutputSink`], within a byte cap:
//! past the cap one notice line is sent and the rest is dropped (but still read, so the remote
//! side never blocks on a full pipe). Takes the wrapper's end marker out of stderr on the way.

use vesemir_core::ports::{OutputSink, OutputStream};

/// Line assembly for both streams of one command, sharing one byte budget.
pub(crate) struct LineSplitter {
    sink: OutputSink,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    remaining: usize,
    limit: usize,
    truncated: bool,
}

impl LineSplitter {
    /// A splitter sending to `sink` at most `limit` bytes of output (line endings count).
    pub(crate) fn new(sink: OutputSink, limit: usize) -> Self {
        Self { sink, stdout: Vec::new(), stderr: Vec::new(), remaining: limit, limit, truncated: false }
    }

    /// Takes a chunk read from `stream` and sends every complete line in it.
    pub(crate) fn push(&mut self, stream: OutputStream, bytes: &[u8]) {
        if self.truncated {
            return;
        }
        let mut buffer = std::mem::take(self.buffer(stream));
        buffer.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(offset) = buffer[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            self.emit(stream, &buffer[start..end], true);
            start = end + 1;
            if self.truncated {
                return;
            }
        }
        buffer.drain(..start);
        // A line longer than the whole budget can never be sent whole: cut it now rather than
        // buffer without bound.
        if buffer.len() > self.remaining {
            self.cut();
            return;
        }
        *self.buffer(stream) = buffer;
    }

    /// Sends what is left of unterminated lines (the command ended).
    pub(crate) fn finish(&mut self) {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let rest = std::mem::take(self.buffer(stream));
            if !rest.is_empty() && !self.truncated {
                self.emit(stream, &rest, false);
            }
        }
    }

    fn buffer(&mut self, stream: OutputStream) -> &mut Vec<u8> {
        match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        }
    }

    fn emit(&mut self, stream: OutputStream, line: &[u8], terminated: bool) {
        let cost = line.len() + usize::from(terminated);
        if cost > self.remaining {
            self.cut();
            return;
        }
        self.remaining -= cost;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.sink.send(stream, String::from_utf8_lossy(line));
    }

    fn cut(&mut self) {
        self.truncated = true;
        self.stdout = Vec::new();
        self.stderr = Vec::new();
        self.sink.send(
            OutputStream::Stderr,
            format!("[vesemir] output truncated: more than {} bytes, the rest was dropped", self.limit),
        );
    }
}

/// Finds the wrapper's end marker line in a stream and takes it out, wherever the reads cut
/// it: bytes that could be the start of the marker are held back until the next chunk tells.
pub(crate) struct EndMarker {
    line: Vec<u8>,
    held: Vec<u8>,
    seen: bool,
}

impl EndMarker {
    /// Looks for `marker` followed by a newline.
    pub(crate) fn new(marker: &str) -> Self {
        let mut line = marker.as_bytes().to_vec();
        line.push(b'\n');
        Self { line, held: Vec::new(), seen: false }
    }

    /// Takes a chunk of the stream and returns the part that is output, marker removed.
    pub(crate) fn filter(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(bytes);
        let mut out = Vec::with_capacity(self.held.len());
        loop {
            match find(&self.held, &self.line) {
                Some(at) => {
                    out.extend_from_slice(&self.held[..at]);
                    self.held.drain(..at + self.line.len());
                    self.seen = true;
                }
                None => {
                    let keep = (1..self.line.len().min(self.held.len() + 1))
                        .rev()
                        .find(|&n| self.held.ends_with(&self.line[..n]))
                        .unwrap_or(0);
                    let cut = self.held.len() - keep;
                    out.extend(self.held.drain(..cut));
                    return out;
                }
            }
        }
    }

    /// The bytes still held back (the stream ended).
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Whether the marker line came.
    pub(crate) fn seen(&self) -> bool {
        self.seen
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesemir_core::ports::OutputLine;

    fn lines(limit: usize, chunks: &[(OutputStream, &str)]) -> Vec<OutputLine> {
        let (sink, mut receiver) = OutputSink::channel();
        let mut splitter = LineSplitter::new(sink, limit);
        for (stream, chunk) in chunks {
            splitter.push(*stream, chunk.as_bytes());
        }
        splitter.finish();
        receiver.drain()
    }

    #[test]
    fn lines_are_split_across_chunks_per_stream() {
        let got = lines(
            100,
            &[
                (OutputStream::Stdout, "a\nb"),
                (OutputStream::Stderr, "e\r\n"),
                (OutputStream::Stdout, "c\nd"),
            ],
        );
        let text: Vec<(OutputStream, &str)> = got.iter().map(|l| (l.stream, l.text.as_str())).collect();
        assert_eq!(
            text,
            [
                (OutputStream::Stdout, "a"),
                (OutputStream::Stderr, "e"),
                (OutputStream::Stdout, "bc"),
                (OutputStream::Stdout, "d")
            ]
        );
    }

    #[test]
    fn the_cap_sends_one_notice_and_drops_the_rest() {
        let got = lines(6, &[(OutputStream::Stdout, "abc\ndef\nghi\n"), (OutputStream::Stdout, "more\n")]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].text, "abc");
        assert!(got[1].text.contains("truncated"), "{got:?}");
        let long = "x".repeat(50);
        let got = lines(10, &[(OutputStream::Stdout, &long)]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].text.contains("truncated"));
    }

    #[test]
    fn the_end_marker_is_taken_out_wherever_the_reads_cut_it() {
        let stream = "one\ntwo vesemir-end-7\nvesemir-end-7\nthree\nvesemir-end";
        for cut in 0..stream.len() {
            let mut marker = EndMarker::new("vesemir-end-7");
            let mut out = marker.filter(&stream.as_bytes()[..cut]);
            out.extend(marker.filter(&stream.as_bytes()[cut..]));
            out.extend(marker.finish());
            assert_eq!(String::from_utf8_lossy(&out), "one\ntwo three\nvesemir-end", "cut at {cut}");
            assert!(marker.seen(), "cut at {cut}");
        }
        let mut marker = EndMarker::new("vesemir-end-7");
        assert_eq!(marker.filter(b"vesemir-end-7 is not alone\n"), b"vesemir-end-7 is not alone\n");
        assert_eq!(marker.filter(b"held: vesemir-end-"), b"held: ");
        assert_eq!(marker.finish(), b"vesemir-end-");
        assert!(!marker.seen());
    }
}
