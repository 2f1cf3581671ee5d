//! Selector compilation, evaluation, caching and legacy desugaring.

use std::sync::Arc;

use serde_json::json;

use super::*;

fn event() -> Value {
    json!({
        "schemaVersion": "1", "eventId": "e1", "kind": "pr.opened", "subject": "s",
        "source": {"type": "webhook", "occurredAt": "t", "connectorInstanceId": "ci1"},
        "data": {"repo": "acme/api", "branch": "main", "n": 3, "labels": ["a", "b"],
                 "image": "ghcr.io/acme/app"},
        "raw": {"headers": {}, "body": ""}, "depth": 0
    })
}

fn eval(expr: &str) -> Result<bool, EvalError> {
    CompiledExpr::selector(expr)
        .unwrap()
        .matches(&EventScope::from_json(event(), None))
}

fn compile_error(expr: &str) -> String {
    match CompiledExpr::selector(expr) {
        Err(SelectorError::Invalid(m)) => m,
        Err(other) => panic!("{expr}: {other}"),
        Ok(_) => panic!("{expr} compiled"),
    }
}

#[test]
fn standard_functions_and_macros_are_available() {
    for expr in [
        r#"event.kind == "pr.opened""#,
        r#"event.data.repo.startsWith("acme/")"#,
        r#"event.data.repo.endsWith("/api")"#,
        r#"event.data.repo.contains("me/a")"#,
        r#"event.data.branch.matches("^ma.n$")"#,
        r#"has(event.data.repo) && !has(event.data.nope)"#,
        r#"size(event.data.labels) == 2"#,
        r#""a" in event.data.labels"#,
        r#"event.data.n + 1 == 4"#,
        r#"event.data.labels.exists(l, l == "b")"#,
        r#"event.source.connectorInstanceId == "ci1" || false"#,
    ] {
        assert_eq!(eval(expr), Ok(true), "{expr}");
    }
    assert_eq!(eval(r#"event.data.repo == "other""#), Ok(false));
}

#[test]
fn compile_rejects_syntax_unbound_roots_and_type_mismatch() {
    assert!(compile_error("event.kind ==").contains("syntax"));
    assert!(compile_error(r#"inputs.foo == "x""#).contains("inputs"));
    assert!(compile_error("event.kind && event.subject").contains("type mismatch"));
    assert!(compile_error(r#"!"x""#).contains("type mismatch"));
    assert!(compile_error("   ").contains("empty"));
    // Comprehension variables are bound inside their macro only.
    assert!(CompiledExpr::selector("event.data.labels.all(x, x != \"\")").is_ok());
    assert!(compile_error("event.data.labels.all(x, x != y)").contains("\"y\""));
}

#[test]
fn compile_caps_length_and_nesting() {
    let long = format!("event.kind == \"{}\"", "a".repeat(MAX_SELECTOR_LEN));
    assert!(compile_error(&long).contains("limit"));
    let deep = format!("{}true{}", "(".repeat(60), ")".repeat(60));
    assert!(compile_error(&deep).contains("nests deeper"));
    let chain = vec!["event.data.n == 3"; 60].join(" && ");
    assert!(CompiledExpr::selector(&chain).is_ok() || compile_error(&chain).contains("nests"));
}

#[test]
fn bare_true_is_unconditional() {
    assert_eq!(eval("true"), Ok(true));
}

#[test]
fn missing_fields_and_runtime_errors_are_no_match_errors() {
    assert!(matches!(
        eval(r#"event.data.absent == "x""#),
        Err(EvalError::Execution(_))
    ));
    assert!(matches!(
        eval(r#"!(event.data.absent == "x")"#),
        Err(EvalError::Execution(_))
    ));
    assert_eq!(
        eval(r#"has(event.data.absent) && event.data.absent == "x""#),
        Ok(false)
    );
}

#[test]
fn non_boolean_results_report_their_type() {
    assert_eq!(
        eval("event.kind"),
        Err(EvalError::NotBoolean {
            result_type: "string".into()
        })
    );
    assert_eq!(
        eval("event.data.n"),
        Err(EvalError::NotBoolean {
            result_type: "int".into()
        })
    );
}

#[test]
fn pins_are_top_level_literal_equalities() {
    let c = CompiledExpr::selector(
        r#"event.kind == "pr.opened" && ("acme/api" == event.data.repo && event.data.n > 1)"#,
    )
    .unwrap();
    assert_eq!(
        c.pins(),
        &[
            Pin {
                path: vec!["kind".into()],
                value: PinValue::String("pr.opened".into())
            },
            Pin {
                path: vec!["data".into(), "repo".into()],
                value: PinValue::String("acme/api".into())
            },
        ]
    );
    let disjunction =
        CompiledExpr::selector(r#"event.kind == "a.b" || event.kind == "c.d""#).unwrap();
    assert!(disjunction.pins().is_empty());
    let negated = CompiledExpr::selector(r#"!(event.kind == "a.b")"#).unwrap();
    assert!(negated.pins().is_empty());
}

#[test]
fn cache_returns_one_object_per_owner_and_expression() {
    let cache = SelectorCache::default();
    let a = cache.selector("sub1", "true").unwrap();
    let b = cache.selector("sub1", "true").unwrap();
    let c = cache.selector("sub2", "true").unwrap();
    let d = cache.selector("sub1", "false").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &c));
    assert!(!Arc::ptr_eq(&a, &d));
    assert_eq!(cache.len(), 3);
    cache.clear();
    assert!(cache.is_empty());
    assert!(!Arc::ptr_eq(&a, &cache.selector("sub1", "true").unwrap()));
}

#[test]
fn cache_evicts_the_least_recently_used_and_refuses_invalid() {
    let cache = SelectorCache::with_capacity(2);
    let a = cache.selector("a", "true").unwrap();
    cache.selector("b", "true").unwrap();
    // `a` is used again, so `b` is the one to go when `c` arrives.
    assert!(Arc::ptr_eq(&a, &cache.selector("a", "true").unwrap()));
    cache.selector("c", "true").unwrap();
    assert_eq!(cache.len(), 2);
    assert!(
        Arc::ptr_eq(&a, &cache.selector("a", "true").unwrap()),
        "a stayed"
    );
    assert!(cache.selector("d", "event.kind ==").is_err());
    assert_eq!(cache.len(), 2, "nothing cached for an invalid expression");
}

#[test]
fn expression_hash_is_sha256_hex() {
    assert_eq!(
        expression_hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn desugar_eq_prefix_regex() {
    assert_eq!(
        desugar("repo", MatchType::Eq, "acme/api").unwrap(),
        r#"event.data.repo == "acme/api""#
    );
    assert_eq!(
        desugar("image.name", MatchType::Prefix, "ghcr.io/acme/").unwrap(),
        r#"event.data.image.name.startsWith("ghcr.io/acme/")"#
    );
    assert_eq!(
        desugar("branch", MatchType::Regex, "^rel-[0-9]+$").unwrap(),
        r#"event.data.branch.matches("^rel-[0-9]+$")"#
    );
}

#[test]
fn desugared_values_escape_quotes_and_round_trip() {
    let expr = desugar("q", MatchType::Eq, r#"say "hi" \ bye"#).unwrap();
    let scope = EventScope::from_json(json!({"data": {"q": r#"say "hi" \ bye"#}}), None);
    assert_eq!(
        CompiledExpr::selector(&expr).unwrap().matches(&scope),
        Ok(true)
    );
}

#[test]
fn desugared_prefix_semantics() {
    let matches = |prefix: &str| {
        let expr = desugar("image", MatchType::Prefix, prefix).unwrap();
        CompiledExpr::selector(&expr)
            .unwrap()
            .matches(&EventScope::from_json(event(), None))
    };
    assert_eq!(matches("ghcr.io/acme/"), Ok(true));
    assert_eq!(matches(""), Ok(true));
    // The prefix minus its trailing char is not the prefix.
    let scope = EventScope::from_json(json!({"data": {"image": "ghcr.io/acme"}}), None);
    let expr = desugar("image", MatchType::Prefix, "ghcr.io/acme/").unwrap();
    assert_eq!(
        CompiledExpr::selector(&expr).unwrap().matches(&scope),
        Ok(false)
    );
}

#[test]
fn desugar_rejects_bad_fields_jsonpath_cel_and_bad_regex() {
    for field in ["", "has-hyphen", "a..b", "1st"] {
        assert!(desugar(field, MatchType::Eq, "v").is_err(), "{field}");
    }
    let Err(SelectorError::Invalid(m)) = desugar("a", MatchType::Jsonpath, "$.a") else {
        panic!("jsonpath must be refused as invalid");
    };
    assert!(m.contains("jsonpath"));
    assert!(desugar("a", MatchType::Cel, "true").is_err());
    assert!(desugar("a", MatchType::Regex, "(").is_err());
}

#[test]
fn scope_exposes_inputs_only_for_manual_fires() {
    let manual = crate::normalize::manual_fire(
        "t",
        Some("s1"),
        json!({"x": 1}).as_object().unwrap().clone(),
        None,
    )
    .unwrap();
    let mapping = CompiledExpr::mapping("inputs.x + 1").unwrap();
    assert_eq!(
        mapping.evaluate(&EventScope::new(&manual)).unwrap(),
        CelValue::Int(2)
    );
    let scope = EventScope::from_json(event(), None);
    assert!(mapping.evaluate(&scope).is_err());
    assert_eq!(
        scope.field(&["data".into(), "repo".into()]),
        Some(&json!("acme/api"))
    );
}

#[test]
fn selector_bombs_are_refused_at_compile_time() {
    // Ten nested `.all()` macros: 10^10 steps over a ten-element list.
    let mut bomb = "true".to_owned();
    for i in 0..10 {
        bomb = format!("event.data.xs.all(x{i}, {bomb})");
    }
    let Err(SelectorError::TooExpensive(m)) = CompiledExpr::selector(&bomb) else {
        panic!("a selector bomb must be refused");
    };
    assert!(m.contains("nested 10 deep"), "{m}");
    let many = (0..9)
        .map(|i| format!("event.data.xs.exists(x{i}, x{i} == {i})"))
        .collect::<Vec<_>>()
        .join(" || ");
    assert!(matches!(
        CompiledExpr::selector(&many),
        Err(SelectorError::TooExpensive(_))
    ));
    // Two levels are fine.
    CompiledExpr::selector("event.data.xs.exists(x, event.data.ys.exists(y, x == y))").unwrap();
}

#[test]
fn a_nested_comprehension_over_a_huge_list_is_not_run_for_that_event() {
    let compiled =
        CompiledExpr::selector("event.data.xs.exists(x, event.data.xs.exists(y, x == y + 1))")
            .unwrap();
    let event = |n: usize| {
        let xs: Vec<i64> = (0..n as i64).collect();
        EventScope::from_json(serde_json::json!({"kind": "x.y", "data": {"xs": xs}}), None)
    };
    assert_eq!(compiled.matches(&event(50)), Ok(true), "small lists run");
    assert!(matches!(
        compiled.matches(&event(5_000)),
        Err(EvalError::TooExpensive { .. })
    ));
    // Without nesting the same list is cheap enough.
    let flat = CompiledExpr::selector("event.data.xs.exists(x, x == 4999)").unwrap();
    assert_eq!(flat.matches(&event(5_000)), Ok(true));
}

#[test]
fn string_functions_in_nested_comprehensions_are_bounded_by_the_bytes_they_scan() {
    // 2 × 100² steps, each scanning an 80,000-character string: 1.6 GB of scanning
    // (4.3 s when it used to run) is refused before it starts.
    let compiled = CompiledExpr::selector(
        "event.data.xs.all(a, event.data.xs.all(b, !event.data.s.contains('zz')))",
    )
    .unwrap();
    let event = |items: usize, chars: usize| {
        let xs: Vec<usize> = (0..items).collect();
        EventScope::from_json(
            json!({"kind": "x.y", "data": {"xs": xs, "s": "a".repeat(chars)}}),
            None,
        )
    };
    assert!(matches!(
        compiled.matches(&event(100, 80_000)),
        Err(EvalError::TooMuchScanning { .. })
    ));
    assert_eq!(
        compiled.matches(&event(100, 100)),
        Ok(true),
        "short strings run"
    );
    // Comprehensions that compare but call no string function are not charged for it.
    let compare = CompiledExpr::selector("event.data.xs.all(a, a >= 0)").unwrap();
    assert_eq!(compare.matches(&event(100, 80_000)), Ok(true));
}

#[test]
fn authored_selectors_must_be_able_to_be_boolean_and_their_regex_literals_compile() {
    for (expr, kind) in [
        ("event.kind", "string"),
        ("event.depth", "int"),
        ("event.data", "map"),
        ("'x'", "string"),
        ("[true]", "list"),
        ("size(event.data.labels)", "int"),
        ("event.data.n + 1", "a number, string or list"),
        ("event.data.ok ? 'a' : 'b'", "string"),
    ] {
        assert_eq!(
            CompiledExpr::authored_selector(expr).err(),
            Some(SelectorError::NotBoolean(kind)),
            "{expr}"
        );
        assert!(
            CompiledExpr::selector(expr).is_ok(),
            "stored ones still load: {expr}"
        );
    }
    for expr in [
        "event.data.x.matches('(')",
        "matches(event.data.x, '[')",
        "event.data.xs.exists(x, x.matches('a{2,1}'))",
    ] {
        assert!(
            matches!(CompiledExpr::authored_selector(expr), Err(SelectorError::Invalid(m)) if m.contains("regex")),
            "{expr}"
        );
    }
    for expr in [
        "event.data.ok",
        "event.data.ok ? true : false",
        "event.data.x.matches('^a+$')",
        "event.kind == 'a' && event.data.n > 1",
        "true",
    ] {
        assert!(CompiledExpr::authored_selector(expr).is_ok(), "{expr}");
    }
}
