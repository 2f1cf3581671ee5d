//! The release settings that keep each function's binary small stay consistent.

use std::collections::BTreeSet;

fn read(relative: &str) -> String {
    let path = format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The packages the workspace's release profile compiles at `opt-level = 3` (the crates
/// every event runs through; everything else is `"z"`).
fn full_speed_packages(manifest: &str) -> BTreeSet<String> {
    let mut packages = BTreeSet::new();
    let mut section: Option<&str> = None;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line
                .strip_prefix("[profile.release.package.")
                .and_then(|rest| rest.strip_suffix(']'));
        } else if let (Some(package), "opt-level = 3") = (section, line) {
            packages.insert(package.trim_matches('"').to_owned());
        }
    }
    packages
}

/// The packages a function's `[package.metadata.lambda.build]` sets to `opt-level = "z"`
/// (what `cargo lambda build --release --bin <function>`, and so `sam build`, adds).
fn compiled_for_size(manifest: &str) -> BTreeSet<String> {
    manifest
        .lines()
        .filter_map(|line| {
            line.trim()
                .strip_prefix("'profile.release.package.")?
                .strip_suffix(".opt-level=\"z\"',")
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn the_api_is_compiled_for_size_throughout() {
    let workspace = full_speed_packages(&read("Cargo.toml"));
    assert!(workspace.contains("custos-trigger") && workspace.contains("cel"));
    let api = compiled_for_size(&read("functions/api/Cargo.toml"));
    assert_eq!(
        api, workspace,
        "functions/api/Cargo.toml must set every package the workspace compiles at \
         opt-level 3 back to \"z\" (the API's binary budget, BENCHMARKS.md)"
    );
}

#[test]
fn the_per_event_functions_keep_full_speed() {
    for function in ["ingest", "match", "dispatch", "deadletter", "scheduler"] {
        let manifest = read(&format!("functions/{function}/Cargo.toml"));
        assert!(
            compiled_for_size(&manifest).is_empty(),
            "functions/{function}/Cargo.toml: its per-event work keeps the hot crates at opt-level 3"
        );
    }
}

/// What `sam build` builds (`cargo lambda build --bin <function>` in the workspace root,
/// so the default members) carries one crypto library, ring: the test and tool crates'
/// reqwest with aws-lc must not be unified into it.
#[test]
fn the_deployed_build_links_no_aws_lc() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let tree = |extra: &[&str]| {
        std::process::Command::new(&cargo)
            .args(["tree", "--locked", "-e", "normal,features"])
            .args(extra)
            .current_dir(root)
            .output()
            .unwrap()
    };
    let deployed = tree(&["-i", "aws-lc-rs"]);
    let stderr = String::from_utf8_lossy(&deployed.stderr);
    assert!(
        !deployed.status.success() && stderr.contains("did not match any packages"),
        "aws-lc-rs is in the default members' build:\n{}{stderr}",
        String::from_utf8_lossy(&deployed.stdout)
    );
    // The probe can fail: the whole workspace (the tests' reqwest) does link it.
    let workspace = tree(&["--workspace", "-i", "aws-lc-rs"]);
    assert!(
        workspace.status.success(),
        "{}",
        String::from_utf8_lossy(&workspace.stderr)
    );
}
