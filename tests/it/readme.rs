//! The README's command line is the binary's: every flag its "Command line" section names exists in
//! `provider-images extract --help` or `resolve --help`, each table row's flags are exactly in the
//! subcommands the row says, and every flag of either `--help` has a row. The README's two
//! commands come first.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::Run;

const SUBCOMMANDS: [&str; 2] = ["extract", "resolve"];

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The text of the `## {title}` section, up to the next `## ` heading.
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    let heading = format!("\n## {title}\n");
    let start = text
        .find(&heading)
        .unwrap_or_else(|| panic!("README has no \"## {title}\" section"))
        + heading.len();
    let end = text[start..]
        .find("\n## ")
        .map_or(text.len(), |end| start + end);
    &text[start..end]
}

/// Every `--flag` in `text`.
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let after = &rest[at + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(after.len());
        // `---` and a bare `--` are no flags.
        if len > 0 && !after.starts_with('-') {
            flags.insert(format!("--{}", &after[..len]));
        }
        rest = &after[len..];
    }
    flags
}

/// The flags `provider-images <subcommand> --help` defines: those on its option lines (the lines
/// that start with `-`), not the ones its descriptions mention.
fn help_flags(subcommand: &str) -> BTreeSet<String> {
    let run = Run::new().args([subcommand, "--help"]).run();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let flags: BTreeSet<String> = run
        .stdout
        .lines()
        .filter(|line| line.trim_start().starts_with('-'))
        .flat_map(|line| {
            // The option and its value name end where the description starts (two spaces).
            let definition = line.trim_start().split("  ").next().unwrap();
            flags_in(definition)
        })
        .collect();
    assert!(
        flags.len() > 5,
        "{subcommand} --help parsed to {flags:?}:\n{}",
        run.stdout
    );
    flags
}

/// The table rows of the section: first cell's flags → the subcommands of the second cell.
fn table(section: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        let flags = flags_in(cells[0]);
        if flags.is_empty() {
            continue; // the header and its rule
        }
        assert!(cells.len() >= 2, "{line}");
        let commands: BTreeSet<String> =
            cells[1].split(',').map(|c| c.trim().to_string()).collect();
        for command in &commands {
            assert!(
                SUBCOMMANDS.contains(&command.as_str()),
                "row {line}: second cell names subcommands, not {command:?}"
            );
        }
        for flag in flags {
            assert!(
                rows.insert(flag.clone(), commands.clone()).is_none(),
                "{flag}: two rows"
            );
        }
    }
    rows
}

#[test]
fn the_readme_command_line_matches_help_both_ways() {
    let readme = readme();
    let section = section(&readme, "Command line");
    let rows = table(section);
    let mut problems = Vec::new();

    let mut all_help = BTreeSet::new();
    for subcommand in SUBCOMMANDS {
        let help = help_flags(subcommand);
        let documented: BTreeSet<String> = rows
            .iter()
            .filter(|(_, commands)| commands.contains(subcommand))
            .map(|(flag, _)| flag.clone())
            .collect();
        for flag in help.difference(&documented) {
            problems.push(format!(
                "{subcommand} --help has {flag}; the README's table does not say so"
            ));
        }
        for flag in documented.difference(&help) {
            problems.push(format!(
                "the README's table gives {flag} to {subcommand}; its --help does not have it"
            ));
        }
        all_help.extend(help);
    }
    // Flags named anywhere else in the section (synopsis, prose) must exist too.
    for flag in flags_in(section).difference(&all_help) {
        problems.push(format!(
            "the README's command-line section names {flag}, which no --help has"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_flag_parsers_read_what_they_should() {
    assert_eq!(
        flags_in("`--ca-file FILE` (--no-cluster), ---, -- x, --a2-b"),
        ["--a2-b", "--ca-file", "--no-cluster"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let rows = table(
        "| flag | commands |\n|---|---|\n| `--x N` | extract |\n| `--y`, `--z` | extract, resolve |\n",
    );
    assert_eq!(rows.len(), 3);
    assert_eq!(rows["--z"].len(), 2);
}

#[test]
fn the_two_commands_come_first() {
    let readme = readme();
    let commands: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("    bash ") || l.starts_with("    provider-images "))
        .take(2)
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .map(|c| match c.as_str() {
            "bash hack/demo.sh" => "demo",
            "bash hack/test.sh" => "test",
            _ => "other",
        })
        .collect();
    assert_eq!(commands, ["demo", "test"]);
    let first_code = readme
        .lines()
        .position(|l| l.starts_with("    "))
        .expect("a code block");
    assert_eq!(
        readme
            .lines()
            .nth(first_code)
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>(),
        ["bash", "hack/demo.sh"],
        "the first code line is the demo"
    );
}
