//! The `vesemir` command (not built yet: see issue 6).

fn main() {
    eprintln!("vesemir: the command line is not built yet (issue 6)");
    std::process::exit(2);
}
