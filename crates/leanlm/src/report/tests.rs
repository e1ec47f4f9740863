use super::*;

fn row(name: &str, tg: f64, ppl: f64, flops: f64) -> Row {
    Row {
        variant: name.into(),
        kind: "prune".into(),
        tg_tokens_per_sec: tg,
        ppl: Some(ppl),
        flops_per_token: flops,
        ..Row::default()
    }
}

#[test]
fn pareto_keeps_only_undominated_variants() {
    let rows = vec![
        row("dense", 100.0, 20.0, 3.0),
        row("fast-bad", 200.0, 40.0, 1.0),
        row("dominated", 90.0, 25.0, 3.5),
        row("middle", 150.0, 22.0, 2.0),
    ];
    // Speed: cost = 1/tg, ordered from the cheapest (fastest) to the dearest.
    assert_eq!(pareto(&rows, CostAxis::DecodeSpeed), vec![1, 3, 0]);
    assert_eq!(pareto(&rows, CostAxis::Flops), vec![1, 3, 0]);
}

#[test]
fn verdict_names_the_variant_that_meets_the_goal_or_the_closest() {
    let mut s = Summary {
        recipe: "t".into(),
        description: String::new(),
        run_dir: "runs/t".into(),
        git_commit: None,
        threads: 2,
        eval: serde_json::json!({}),
        goal: Goal::default(),
        note: None,
        rows: vec![row("dense", 100.0, 20.0, 3.0), row("a", 160.0, 21.0, 2.0)],
        pair: None,
    };
    assert!(verdict(&s).contains("Met by **a**"), "{}", verdict(&s));
    s.rows[1].tg_tokens_per_sec = 120.0;
    s.rows.push(row("b", 300.0, 40.0, 1.0));
    let v = verdict(&s);
    assert!(v.contains("Not met") && v.contains("**a**, 1.20×"), "{v}");
    assert!(v.contains("overall: **b**, 3.00×"), "{v}");
}

#[test]
fn tables_and_plots_render_every_variant() {
    let mut rows = vec![
        row("dense", 100.0, 20.0, 3e8),
        row("wanda", 110.0, 30.0, 1.5e8),
    ];
    rows[1].layer_sparsity = vec![0.5, 0.5, 0.4];
    rows[1].exit_histogram = vec![0, 0, 3, 1];
    let t = table(&rows);
    assert_eq!(t.lines().count(), 4);
    assert!(t.contains("| wanda | prune |") && t.contains("1.10"), "{t}");
    let svg = quality_vs_cost_svg(&rows, CostAxis::DecodeSpeed, Some((1.5, 1.1))).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("\nwanda\n"),
        "{svg}"
    );
    let svg = sparsity_svg(&rows).unwrap();
    assert!(svg.contains("\nwanda\n"));
    assert!(exit_histogram_svg(&rows[1]).unwrap().contains("<rect"));
    assert!(exit_histogram_svg(&rows[0]).is_err());
}

#[test]
fn the_pair_is_reported_measured_or_not_run() {
    let mut p = crate::report::PairReport {
        target: "t.gguf".into(),
        draft: "d.gguf".into(),
        k: 8,
        not_run: Some("t.gguf is absent".into()),
        ..Default::default()
    };
    let s = p.sentence();
    assert!(s.contains("not run in this run (t.gguf is absent)"), "{s}");
    p.not_run = None;
    p.plain_tg_tokens_per_sec = Some(12.0);
    p.speculative_tg_tokens_per_sec = Some(10.2);
    p.acceptance = Some(0.97);
    p.tokens_per_target_pass = Some(3.47);
    let s = p.sentence();
    assert!(
        s.contains("plain decoding 12.0 tokens/s, speculative 10.2 tokens/s (0.85×)"),
        "{s}"
    );
    assert!(
        s.contains("97% of drafts accepted, 3.47 tokens per target pass"),
        "{s}"
    );
}
