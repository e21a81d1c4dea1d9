//! The manual pages, generated from the clap definitions so they never drift from `--help`:
//! `vesemir(1)` and one page per subcommand, named by its path (`vesemir-config-check(1)`).
//! Hidden subcommands (this generator's own) get no page.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;

/// Writes every page into `dir` (created if missing); returns the files written.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut command = Cli::command();
    command.build();
    let mut written = Vec::new();
    write_page(dir, "vesemir", &command, &mut written)?;
    Ok(written)
}

fn write_page(
    dir: &Path,
    name: &str,
    command: &clap::Command,
    written: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let page =
        command.clone().name(name.to_owned()).display_name(name.to_owned()).bin_name(name.replace('-', " "));
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut text)
        .map_err(|e| format!("cannot render the page of {name}: {e}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    written.push(path);
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_page(dir, &format!("{name}-{}", sub.get_name()), sub, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_subcommand_gets_a_page_with_its_options_and_none_for_hidden_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let written = write_all(dir.path()).expect("pages written");
        let names: Vec<String> =
            written.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
        for expected in ["vesemir.1", "vesemir-deploy.1", "vesemir-serve.1", "vesemir-config-check.1"] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("manpages") || n.contains("help")), "{names:?}");
        let mut command = Cli::command();
        command.build();
        let visible =
            command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").count();
        assert!(names.len() > visible, "a page per subcommand and the main page: {names:?}");

        let deploy = std::fs::read_to_string(dir.path().join("vesemir-deploy.1")).expect("read");
        assert!(deploy.starts_with(".ie") || deploy.contains(".TH vesemir-deploy 1"), "{deploy}");
        assert!(deploy.contains("concurrency"), "the page lists the deploy's options");
        let main = std::fs::read_to_string(dir.path().join("vesemir.1")).expect("read");
        assert!(main.contains("vesemir\\-deploy(1)") || main.contains("deploy"), "{main}");
    }
}
