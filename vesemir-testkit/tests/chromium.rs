//! The browser harness cleans up after itself: a test that panics while a headless Chromium is
//! open leaves neither chromedriver nor any Chromium process running.

use std::time::{Duration, Instant};

use vesemir_testkit::chromium::{is_running, Browser};

#[test]
fn a_panicking_test_leaves_no_chromedriver_or_chromium_running() {
    let artifacts = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let browser = runtime.block_on(Browser::start("http://127.0.0.1:9", artifacts.path()));
    let mut pids = browser.driver().browser_pids();
    let chromium = pids.len();
    pids.push(browser.driver().pid());
    // What a person would see: the browser runs (a blank page answers a script).
    let answer = runtime.block_on(browser.execute("return 6 * 7;", vec![]));
    assert_eq!(answer, serde_json::json!(42));
    assert!(chromium >= 2, "chromedriver started a browser with its helpers: {pids:?}");

    // A test panics while it holds the browser.
    let panicked = std::thread::spawn(move || {
        let _held = browser;
        panic!("a failing assertion in a browser test");
    })
    .join();
    assert!(panicked.is_err(), "the thread panicked");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|pid| is_running(*pid)).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running after the panic: {left:?} of {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
