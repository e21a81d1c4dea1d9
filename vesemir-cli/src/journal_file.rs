//! Where local runs keep their write-ahead journals: a state directory with one append-only
//! JSON-lines file per run (`runs/<run-id>.jsonl`), each entry written and fsync'd before the
//! load balancer change it announces.
//!
//! A running deploy holds an exclusive `flock` on its journal until it ends (the kernel drops it
//! when the process dies, even by `kill -9`), so `recover` tells a crashed run from a live one.
//! A run that ended with nothing left to put back is moved to `finished/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use rustix::fs::{flock, FlockOperation};
use vesemir_core::journal::{JournalEntry, JournalError, JournalWriter, RunId};

/// Overrides where the state directory is.
pub const STATE_DIR_VARIABLE: &str = "VESEMIR_STATE_DIR";

/// The state directory of root, when it exists.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/vesemir";

/// The directory that holds the journals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// A state directory at `root` (created when a run starts).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The state directory: `$VESEMIR_STATE_DIR`; else `/var/lib/vesemir` when running as root
    /// and it exists; else `$XDG_STATE_HOME/vesemir`; else `~/.local/state/vesemir`.
    pub fn locate() -> Result<Self, String> {
        // /proc/self belongs to the process's effective user: root is uid 0.
        let root = fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        let system = Path::new(SYSTEM_STATE_DIR);
        Self::locate_with(|name| std::env::var_os(name), root && system.is_dir())
    }

    /// [`locate`](Self::locate) over given variables; `system` says whether the system
    /// directory applies (root, and it exists).
    fn locate_with(var: impl Fn(&str) -> Option<std::ffi::OsString>, system: bool) -> Result<Self, String> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(dir) = var(STATE_DIR_VARIABLE) {
            return Ok(Self::new(dir));
        }
        if system {
            return Ok(Self::new(SYSTEM_STATE_DIR));
        }
        if let Some(state) = var("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
            return Ok(Self::new(state.join("vesemir")));
        }
        match var("HOME") {
            Some(home) => Ok(Self::new(home.join(".local/state/vesemir"))),
            None => Err(format!(
                "no state directory for the journal: set {STATE_DIR_VARIABLE}, XDG_STATE_HOME or HOME"
            )),
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    fn finished(&self) -> PathBuf {
        self.root.join("finished")
    }

    /// The journal file of `run` while it is unfinished.
    pub fn path_of(&self, run: &RunId) -> PathBuf {
        self.runs().join(format!("{run}.jsonl"))
    }

    /// The control socket of `run` while its deploy runs (see [`crate::control_socket`]).
    pub fn socket_of(&self, run: &RunId) -> PathBuf {
        self.runs().join(format!("{run}.sock"))
    }

    /// A new run id, unique here: the UTC time and this process's id.
    pub fn new_run_id(&self, now: SystemTime) -> Result<RunId, String> {
        let stamp: String = humantime::format_rfc3339_seconds(now)
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let base = format!("{stamp}-{}", std::process::id());
        let mut id = RunId::new(base.clone())?;
        let mut n = 1;
        while self.path_of(&id).exists() || self.finished().join(format!("{id}.jsonl")).exists() {
            n += 1;
            id = RunId::new(format!("{base}-{n}"))?;
        }
        Ok(id)
    }

    /// Creates the journal of a new run, locked for this process, the file and its directory
    /// entry flushed to disk.
    pub fn create(&self, run: &RunId) -> Result<FileJournal, JournalError> {
        let runs = self.runs();
        let error = |what: &str, e: io::Error| JournalError {
            journal: runs.join(format!("{run}.jsonl")).display().to_string(),
            reason: format!("{what}: {e}"),
        };
        create_dir_synced(&runs).map_err(|e| error("cannot create the directory", e))?;
        let path = self.path_of(run);
        let file = OpenOptions::new()
            .append(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| error("cannot create the file", e))?;
        flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|e| error("cannot lock", e.into()))?;
        file.sync_all().map_err(|e| error("cannot flush", e))?;
        sync_dir(&runs).map_err(|e| error("cannot flush the directory", e))?;
        Ok(FileJournal { path, file: Mutex::new(file) })
    }

    /// Opens an unfinished run's journal to append to it, locked for this process. `Ok(None)`
    /// when another process holds it (a deploy still running, or another recovery). A partial
    /// last line (a crash mid-write: its change was never made) is cut off first.
    pub fn open(&self, run: &RunId) -> Result<Option<FileJournal>, JournalError> {
        let path = self.path_of(run);
        let error = |what: &str, e: io::Error| JournalError {
            journal: path.display().to_string(),
            reason: format!("{what}: {e}"),
        };
        let mut file =
            OpenOptions::new().read(true).write(true).open(&path).map_err(|e| error("cannot open", e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(None),
            Err(e) => return Err(error("cannot lock", e.into())),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| error("cannot read", e))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            file.set_len(complete as u64).map_err(|e| error("cannot cut its partial last line", e))?;
            file.sync_all().map_err(|e| error("cannot flush", e))?;
        }
        file.seek(SeekFrom::End(0)).map_err(|e| error("cannot seek", e))?;
        Ok(Some(FileJournal { path, file: Mutex::new(file) }))
    }

    /// Whether another process holds `run`'s journal (a deploy still running).
    pub fn is_running(&self, run: &RunId) -> bool {
        let Ok(file) = File::open(self.path_of(run)) else { return false };
        matches!(flock(&file, FlockOperation::NonBlockingLockShared), Err(e) if e == rustix::io::Errno::WOULDBLOCK)
    }

    /// Every unfinished run's journal, read (oldest first). A file that cannot be read is an error
    /// naming it; an empty state directory is no journal.
    pub fn unfinished(&self) -> Result<Vec<ReadJournal>, JournalError> {
        let runs = self.runs();
        let entries = match fs::read_dir(&runs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(JournalError {
                    journal: runs.display().to_string(),
                    reason: format!("cannot list: {e}"),
                })
            }
        };
        let mut journals = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".jsonl"))
            else {
                continue;
            };
            let Ok(run) = RunId::new(stem) else { continue };
            journals.push(read(&path, run)?);
        }
        journals.sort_by(|a, b| a.run.cmp(&b.run));
        Ok(journals)
    }

    /// Moves a run's journal to `finished/`: it is no longer listed.
    pub fn archive(&self, run: &RunId) -> Result<(), JournalError> {
        let finished = self.finished();
        let error = |e: io::Error| JournalError {
            journal: self.path_of(run).display().to_string(),
            reason: format!("cannot move it to {}: {e}", finished.display()),
        };
        create_dir_synced(&finished).map_err(error)?;
        fs::rename(self.path_of(run), finished.join(format!("{run}.jsonl"))).map_err(error)?;
        sync_dir(&finished).map_err(error)?;
        sync_dir(&self.runs()).map_err(error)
    }
}

/// A run's journal file, open for appending and locked by this process.
#[derive(Debug)]
pub struct FileJournal {
    path: PathBuf,
    file: Mutex<File>,
}

impl FileJournal {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl JournalWriter for FileJournal {
    fn append(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        let error = |reason: String| JournalError { journal: self.path.display().to_string(), reason };
        let mut line =
            serde_json::to_vec(entry).map_err(|e| error(format!("cannot encode an entry: {e}")))?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&line).map_err(|e| error(format!("cannot write: {e}")))?;
        file.sync_data().map_err(|e| error(format!("cannot flush to disk: {e}")))
    }
}

/// A journal as read from its file.
#[derive(Debug, Clone)]
pub struct ReadJournal {
    /// The run.
    pub run: RunId,
    /// The file.
    pub path: PathBuf,
    /// Its complete entries, in order.
    pub entries: Vec<JournalEntry>,
    /// Lines that could not be read (a partial last line after a crash mid-write), said for a person.
    pub warnings: Vec<String>,
    /// When it was last written.
    pub modified: Option<SystemTime>,
}

/// Reads a journal file. A partial last line is ignored with a warning, and so is (more
/// loudly) any other line that is not an entry.
pub fn read(path: &Path, run: RunId) -> Result<ReadJournal, JournalError> {
    let error = |e: io::Error| JournalError {
        journal: path.display().to_string(),
        reason: format!("cannot read: {e}"),
    };
    let bytes = fs::read(path).map_err(error)?;
    let modified = fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let ends_complete = bytes.last().is_none_or(|b| *b == b'\n');
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let count = lines.len();
    for (number, line) in lines.into_iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let partial = number + 1 == count && !ends_complete;
        match serde_json::from_slice::<JournalEntry>(line) {
            Ok(entry) if !partial => entries.push(entry),
            _ if partial => warnings.push(format!(
                "{}: line {} is partial (the process died while writing it; its change was not made): ignored",
                path.display(),
                number + 1
            )),
            Ok(_) => {}
            Err(e) => warnings.push(format!(
                "{}: line {} is not a journal entry ({e}): ignored; check the servers of this run by hand",
                path.display(),
                number + 1
            )),
        }
    }
    Ok(ReadJournal { run, path: path.to_owned(), entries, warnings, modified })
}

fn create_dir_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    // Flush the new entries up the chain, so the directory survives a power cut.
    let mut current = Some(dir);
    while let Some(path) = current {
        sync_dir(path)?;
        current = path.parent().filter(|p| !p.as_os_str().is_empty());
        if current.is_some_and(|p| p.parent().is_none()) {
            break;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesemir_core::journal::{replay, Finished};

    fn run(id: &str) -> RunId {
        RunId::new(id).expect("run id")
    }

    fn finished() -> JournalEntry {
        JournalEntry::Finished(Finished::Recovery)
    }

    #[test]
    fn entries_are_appended_one_line_each_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().join("state"));
        let id = state.new_run_id(SystemTime::UNIX_EPOCH).expect("id");
        assert!(id.as_str().starts_with("19700101T000000Z-"), "{id}");
        let journal = state.create(&id).expect("creates");
        journal.append(&finished()).expect("appends");
        journal.append(&finished()).expect("appends");
        let text = fs::read_to_string(journal.path()).expect("read");
        assert_eq!(text, "{\"entry\":\"finished\",\"by\":\"recovery\"}\n".repeat(2));
        assert!(state.is_running(&id), "the creating process holds the lock");
        let listed = state.unfinished().expect("lists");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].entries.len(), 2);
        assert!(listed[0].warnings.is_empty());
        assert!(state.open(&id).expect("opens").is_none(), "locked by the run");
        drop(journal);
        assert!(!state.is_running(&id));
        assert!(state.create(&id).is_err(), "never overwrites a journal");
        assert_ne!(state.new_run_id(SystemTime::UNIX_EPOCH).expect("id"), id, "ids are unique here");
    }

    #[test]
    fn a_partial_last_line_is_ignored_with_a_warning_and_cut_before_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let id = run("crashed");
        let journal = state.create(&id).expect("creates");
        journal.append(&finished()).expect("appends");
        drop(journal);
        let mut file = OpenOptions::new().append(true).open(state.path_of(&id)).expect("open");
        file.write_all(b"{\"entry\":\"intent\",\"host\":\"web-0").expect("write");
        drop(file);
        let read_back = read(&state.path_of(&id), id.clone()).expect("reads");
        assert_eq!(read_back.entries, [finished()]);
        assert_eq!(read_back.warnings.len(), 1);
        assert!(read_back.warnings[0].contains("line 2 is partial"), "{:?}", read_back.warnings);
        // Appending after a crash cuts the partial line off first.
        let journal = state.open(&id).expect("opens").expect("not locked");
        journal.append(&finished()).expect("appends");
        drop(journal);
        let read_back = read(&state.path_of(&id), id.clone()).expect("reads");
        assert_eq!(read_back.entries, [finished(), finished()]);
        assert!(read_back.warnings.is_empty(), "{:?}", read_back.warnings);
        assert!(replay(read_back.entries).is_empty());
    }

    #[test]
    fn a_corrupt_middle_line_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        fs::write(&path, "{\"entry\":\"finished\",\"by\":\"recovery\"}\nnot json\n\n").expect("write");
        let read_back = read(&path, run("x")).expect("reads");
        assert_eq!(read_back.entries.len(), 1);
        assert!(read_back.warnings[0].contains("line 2 is not a journal entry"), "{:?}", read_back.warnings);
    }

    #[test]
    fn archived_runs_are_no_longer_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        assert!(state.unfinished().expect("no directory yet").is_empty());
        drop(state.create(&run("a")).expect("creates"));
        drop(state.create(&run("b")).expect("creates"));
        state.archive(&run("a")).expect("archives");
        let listed: Vec<String> =
            state.unfinished().expect("lists").iter().map(|j| j.run.to_string()).collect();
        assert_eq!(listed, ["b"]);
        assert!(dir.path().join("finished/a.jsonl").is_file());
    }

    #[test]
    fn the_state_directory_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| std::ffi::OsString::from(v))
        };
        let locate = |pairs, system| StateDir::locate_with(env(pairs), system).expect("locates").root;
        let all: &[(&str, &str)] =
            &[(STATE_DIR_VARIABLE, "/srv/state"), ("XDG_STATE_HOME", "/xdg"), ("HOME", "/home/a")];
        assert_eq!(locate(all, true), Path::new("/srv/state"));
        assert_eq!(locate(&all[1..], true), Path::new(SYSTEM_STATE_DIR));
        assert_eq!(locate(&all[1..], false), Path::new("/xdg/vesemir"));
        assert_eq!(
            locate(&[("XDG_STATE_HOME", "relative"), ("HOME", "/home/a")], false),
            Path::new("/home/a/.local/state/vesemir")
        );
        assert_eq!(
            locate(&[(STATE_DIR_VARIABLE, ""), ("HOME", "/home/a")], false),
            Path::new("/home/a/.local/state/vesemir")
        );
        assert!(StateDir::locate_with(env(&[]), false).is_err());
    }
}
