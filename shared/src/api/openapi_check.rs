//! Keeps `openapi.yaml` true: every route of [`super::ROUTES`], each of its methods and
//! status codes, and every problem code must appear in the document.

use super::problem::ALL_CODES;
use super::ROUTES;

const DOCUMENT: &str = include_str!("../../../openapi.yaml");

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The lines of the block opened by the line equal to `header` (at `depth` spaces),
/// searched within `lines`.
fn block<'a>(lines: &[&'a str], header: &str, depth: usize) -> Option<Vec<&'a str>> {
    let start = lines.iter().position(|l| {
        indent(l) == depth && l.trim_end() == format!("{}{header}", " ".repeat(depth))
    })?;
    let body = lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > depth)
        .copied()
        .collect();
    Some(body)
}

#[test]
fn every_route_method_and_status_is_documented() {
    let lines: Vec<&str> = DOCUMENT.lines().collect();
    let paths = block(&lines, "paths:", 0).expect("paths section");
    for route in ROUTES {
        let path = block(&paths, &format!("{}:", route.path), 2)
            .unwrap_or_else(|| panic!("{} is not in openapi.yaml", route.path));
        let method = block(&path, &format!("{}:", route.method.to_ascii_lowercase()), 4)
            .unwrap_or_else(|| panic!("{} {} is not in openapi.yaml", route.method, route.path));
        let responses = block(&method, "responses:", 6)
            .unwrap_or_else(|| panic!("{} {} has no responses", route.method, route.path));
        for status in route.statuses {
            let documented = responses
                .iter()
                .any(|l| indent(l) == 8 && l.trim_start().starts_with(&format!("\"{status}\":")));
            assert!(
                documented,
                "{} {} does not document {status}",
                route.method, route.path
            );
        }
    }
}

#[test]
fn every_problem_code_is_documented() {
    for code in ALL_CODES {
        assert!(
            DOCUMENT
                .lines()
                .any(|l| l.trim() == format!("- {}", code.as_str())),
            "{} is not in openapi.yaml",
            code.as_str()
        );
    }
}

#[test]
fn the_check_notices_a_missing_status() {
    let lines = [
        "paths:",
        "  /a:",
        "    get:",
        "      responses:",
        "        \"200\": {}",
    ];
    let paths = block(&lines, "paths:", 0).unwrap();
    let responses = block(
        &block(&block(&paths, "/a:", 2).unwrap(), "get:", 4).unwrap(),
        "responses:",
        6,
    )
    .unwrap();
    assert!(responses
        .iter()
        .any(|l| l.trim_start().starts_with("\"200\":")));
    assert!(!responses
        .iter()
        .any(|l| l.trim_start().starts_with("\"404\":")));
}
