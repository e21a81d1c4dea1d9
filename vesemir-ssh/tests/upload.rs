//! Uploads on a real sshd: content and mode, atomic replacement (a new file renamed over the
//! old one, no temporary file left), refusal when the directory does not exist.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use vesemir_core::ports::{Executor, FileUpload};
use vesemir_core::PortError;

use common::Lab;

fn upload(lab: &Lab, name: &str, content: &[u8], destination: &str, mode: u32) -> FileUpload {
    let source = lab.sshd.dir().join(name);
    std::fs::write(&source, content).expect("write source");
    FileUpload { source, destination: destination.to_owned(), mode, timeout: Duration::from_secs(30) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_writes_content_and_mode() {
    let lab = Lab::start();
    let executor = lab.executor();
    let target = lab.sshd.dir().join("deploy").join("script.sh");
    std::fs::create_dir(target.parent().expect("parent")).expect("mkdir");
    // 3 MiB of varied bytes: more than one SSH window, every byte value.
    let content: Vec<u8> =
        (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let file = upload(&lab, "source.bin", &content, &target.display().to_string(), 0o755);
    executor.upload(&lab.host(), &file).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert_eq!(std::fs::read(&target).expect("uploaded"), content);
    let mode = std::fs::metadata(&target).expect("metadata").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "{mode:o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_replaces_an_existing_file_atomically() {
    let lab = Lab::start();
    let executor = lab.executor();
    let dir = lab.sshd.dir().join("release");
    std::fs::create_dir(&dir).expect("mkdir");
    let target = dir.join("app.conf");
    std::fs::write(&target, "old\n").expect("old file");
    let old_inode = std::fs::metadata(&target).expect("metadata").ino();
    let file = upload(&lab, "new.conf", b"new\n", &target.display().to_string(), 0o600);
    executor.upload(&lab.host(), &file).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "new\n");
    let metadata = std::fs::metadata(&target).expect("metadata");
    // A new inode: the content was written elsewhere and renamed over, never rewritten in place.
    assert_ne!(metadata.ino(), old_inode, "the file was rewritten in place");
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o600);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["app.conf"], "a temporary file was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_into_a_missing_directory_is_rejected_and_leaves_nothing() {
    let lab = Lab::start();
    let executor = lab.executor();
    let target = lab.sshd.dir().join("no-such-dir").join("file");
    let file = upload(&lab, "f", b"x", &target.display().to_string(), 0o644);
    let error = executor.upload(&lab.host(), &file).await.expect_err("missing directory");
    match &error {
        PortError::Rejected { reason, .. } => assert!(reason.contains("could not write"), "{reason}"),
        other => panic!("expected Rejected, got {}", other.chain()),
    }
    assert!(!target.exists());
    // The session is still usable.
    let ok = upload(&lab, "g", b"y", &lab.sshd.dir().join("ok").display().to_string(), 0o644);
    executor.upload(&lab.host(), &ok).await.unwrap_or_else(|e| panic!("{}", e.chain()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_with_shell_characters_is_taken_literally() {
    let lab = Lab::start();
    let executor = lab.executor();
    let target = lab.sshd.dir().join("it's $(id) `x`; a&b.txt");
    let file = upload(&lab, "f", b"literal\n", &target.display().to_string(), 0o644);
    executor.upload(&lab.host(), &file).await.unwrap_or_else(|e| panic!("{}", e.chain()));
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "literal\n");
}
