//! The commands the README, the docs and the apps' `--help` show run as
//! written: taken from the text itself (so they cannot drift), each file's
//! ```sh blocks as one shell session in order, every command required to
//! succeed, with the output a reader is told to expect checked too. Each
//! session runs in a private mount namespace (`tools/run_session.sh`), so
//! the docs' fixed names (namespace `zcdemo`) never clash with another run.
//!
//! The README's inline `cargo run` commands must be lines of one of those
//! blocks (docs/embedding.md's).
//!
//! Not run here: the README's first block (`bash scripts/demo.sh`, `bash
//! scripts/test.sh`): scripts/test.sh is that second command and runs the
//! demo as one of its steps. The README's library snippet is built by
//! `scripts/embed-check.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use zcstack_tests::netns::bin;
use zcstack_tests::require_root;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bodies of the ```sh blocks of `file`, in order.
fn sh_blocks(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line == "```sh" => current = Some(String::new()),
            None => {}
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    assert!(
        current.is_none(),
        "{}: a ```sh block is not closed",
        file.display()
    );
    blocks
}

/// Runs `session` as a user would type it; returns its stdout, or panics
/// with everything it printed.
fn run_session(what: &str, session: &str) -> String {
    let script = root().join("tests/tools/run_session.sh");
    let bin_dir = bin("zc-echo").parent().expect("bin dir").to_path_buf();
    let out = Command::new("bash")
        .arg(&script)
        .arg(root())
        .arg(&bin_dir)
        .env("ZC_SESSION", session)
        .output()
        .expect("run_session.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: the session failed ({}):\n--- session\n{session}--- stdout\n{stdout}--- stderr (commands traced with +)\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn assert_line(what: &str, stdout: &str, line: &str) {
    assert!(
        stdout.lines().any(|l| l.trim() == line),
        "{what}: expected a line {line:?} in:\n{stdout}"
    );
}

/// The README's blocks after the first, as one session: the tour of the apps.
#[test]
#[ignore = "needs root"]
fn readme_commands_run_as_written() {
    require_root!();
    let blocks = sh_blocks(&root().join("README.md"));
    assert!(
        blocks[0].contains("bash scripts/demo.sh") && blocks[0].contains("bash scripts/test.sh"),
        "the README's first block is no longer the two commands: {}",
        blocks[0]
    );
    let session: String = blocks[1..].concat();
    assert!(session.contains("tapbed.sh up zcdemo"), "{session}");
    let out = run_session("README.md", &session);
    assert_line("README.md", &out, "hello zcstack");
    assert_line("README.md", &out, "same bytes");
    // zc-perf's reports: TCP both ways with the data checked, then UDP.
    assert!(
        out.matches("data ok").count() >= 2,
        "README.md: no checked TCP reports in:\n{out}"
    );
    assert!(
        out.contains("zc-perf: udp client sender"),
        "README.md: no UDP report in:\n{out}"
    );
}

#[test]
#[ignore = "needs root"]
fn docs_commands_run_as_written() {
    require_root!();
    // (file, lines the output must have, beginnings of lines it must have)
    let cases: [(&str, &[&str], &[&str]); 5] = [
        (
            "docs/apps.md",
            &["hello", "same bytes", "206 100"],
            &["8 requests: ["],
        ),
        ("docs/af_xdp.md", &["hello over AF_XDP"], &[]),
        ("docs/tx-gso.md", &["hello with TSO"], &[]),
        ("docs/tap-offload.md", &[], &[]),
        (
            "docs/embedding.md",
            &["hello tap_echo", "same bytes", "hello udp_echo"],
            &["8 MiB echoed intact in "],
        ),
    ];
    for (file, lines, starts) in cases {
        let session = sh_blocks(&root().join(file)).concat();
        assert!(!session.is_empty(), "{file} has no ```sh block");
        let out = run_session(file, &session);
        for line in lines {
            assert_line(file, &out, line);
        }
        for start in starts {
            assert!(
                out.lines().any(|l| l.starts_with(start)),
                "{file}: expected a line starting {start:?} in:\n{out}"
            );
        }
    }
}

/// The commands the README gives inline (`cargo run …` in running text,
/// not in a block) are in a block that `docs_commands_run_as_written` runs.
#[test]
fn readme_inline_commands_are_run_by_a_test() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let run: Vec<String> = sh_blocks(&root().join("docs/embedding.md"))
        .iter()
        .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    // Code spans of the lines outside ``` blocks (none spans two lines).
    let mut inside = false;
    let mut inline: Vec<&str> = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            inside = !inside;
        } else if !inside {
            inline.extend(
                line.split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|span| span.starts_with("cargo run")),
            );
        }
    }
    assert!(
        !inline.is_empty(),
        "README.md gives no inline `cargo run` command any more: update this test"
    );
    for cmd in inline {
        assert!(
            run.iter().any(|l| l == cmd),
            "README.md's `{cmd}` is run by no test: put it in docs/embedding.md's session"
        );
    }
}

/// Each app's `--help` ends with an example on the bed it names; the
/// example runs on that bed as written.
#[test]
#[ignore = "needs root"]
fn help_examples_run_as_written() {
    require_root!();
    const BED: &str = "bash scripts/tapbed.sh up zcdemo zcdemo0 10.200.1.1/24";
    for (app, line) in [
        ("zc-echo", "hello"),
        ("zc-httpd", "200"),
        ("zc-perf", "data ok"),
    ] {
        let help = Command::new(bin(app)).arg("--help").output().expect("help");
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        let tail: Vec<&str> = help
            .lines()
            .skip_while(|l| !l.starts_with("Example"))
            .collect();
        let intro = tail
            .iter()
            .take_while(|l| !l.starts_with("  "))
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            intro.contains(BED),
            "{app} --help: the example does not name its bed:\n{help}"
        );
        let example: Vec<&str> = tail
            .iter()
            .skip_while(|l| !l.starts_with("  "))
            .take_while(|l| l.starts_with("  "))
            .map(|l| &l[2..])
            .collect();
        assert!(!example.is_empty(), "{app} --help has no example:\n{help}");
        let session = format!("{BED}\n{}\n", example.join("\n"));
        let out = run_session(&format!("{app} --help"), &session);
        assert!(
            out.lines().any(|l| l.contains(line)),
            "{app} --help example: no line with {line:?} in:\n{out}"
        );
    }
}
