//! The benchmark's budgets (tools/bench/budgets.toml): the highest value each summary figure
//! may take; `cargo xtask bench` fails when a figure of its run goes past one.
//!
//! The file is a flat TOML table of `name = number` lines with `#` comments, read here without
//! a TOML library: anything else in it is an error, so a typo cannot silently drop a budget.

use std::collections::BTreeMap;

/// Where the budgets live, from the workspace root.
pub const PATH: &str = "tools/bench/budgets.toml";

/// The figures of the summary line, in its order: every one needs a budget.
pub const FIGURES: [&str; 6] = [
    "miniport_instr_qd1",
    "miniport_instr_qd32",
    "miniport_kicks_qd32",
    "miniport_irqs_qd32",
    "ring_instr_qd32",
    "ring_vs_peer_qd32",
];

/// Budget by figure name.
pub type Budgets = BTreeMap<String, f64>;

/// Reads a budgets file: one `name = number` per line, blank lines and `#` comments allowed;
/// every name one of [`FIGURES`], each once, all of them present.
pub fn parse(text: &str) -> Result<Budgets, String> {
    let mut budgets = Budgets::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let at = number + 1;
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{PATH}:{at}: expected `name = number`, found `{line}`"))?;
        let name = name.trim();
        if !FIGURES.contains(&name) {
            return Err(format!("{PATH}:{at}: `{name}` is not a summary figure"));
        }
        let value: f64 = value
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|e| format!("{PATH}:{at}: {name}: {e}"))?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{PATH}:{at}: {name} = {value} is not a budget"));
        }
        if budgets.insert(name.to_string(), value).is_some() {
            return Err(format!("{PATH}:{at}: {name} is given twice"));
        }
    }
    if let Some(missing) = FIGURES.iter().find(|name| !budgets.contains_key(**name)) {
        return Err(format!("{PATH}: no budget for {missing}"));
    }
    Ok(budgets)
}

/// Every figure of `figures` above its budget, described; empty when the run is within budget.
pub fn over_budget(budgets: &Budgets, figures: &[(&str, f64)]) -> Vec<String> {
    figures
        .iter()
        .filter_map(|&(name, value)| match budgets.get(name) {
            Some(&budget) if value > budget => {
                Some(format!("{name} = {value:.4} is over its budget {budget}"))
            }
            Some(_) => None,
            None => Some(format!("{name} has no budget in {PATH}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# comment
miniport_instr_qd1 = 700
miniport_instr_qd32 = 600   # per I/O
miniport_kicks_qd32 = 0.1
miniport_irqs_qd32 = 0.1
ring_instr_qd32 = 1_000
ring_vs_peer_qd32 = 0.6
";

    #[test]
    fn the_repository_budgets_parse() {
        let text = std::fs::read_to_string(crate::util::workspace_root().join(PATH)).unwrap();
        let budgets = parse(&text).unwrap();
        assert_eq!(budgets.len(), FIGURES.len());
    }

    #[test]
    fn a_figure_past_its_budget_fails_and_one_within_passes() {
        let budgets = parse(GOOD).unwrap();
        assert!((budgets["ring_instr_qd32"] - 1000.0).abs() < f64::EPSILON);
        let within = [
            ("miniport_instr_qd32", 600.0),
            ("miniport_kicks_qd32", 0.05),
        ];
        assert!(over_budget(&budgets, &within).is_empty());
        let over = [("miniport_instr_qd32", 600.5), ("miniport_irqs_qd32", 0.2)];
        let failures = over_budget(&budgets, &over);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("miniport_instr_qd32"));
        assert!(!over_budget(&budgets, &[("unknown", 0.0)]).is_empty());
    }

    #[test]
    fn malformed_budget_files_are_refused() {
        let missing = GOOD.replace("ring_vs_peer_qd32 = 0.6\n", "");
        assert!(parse(&missing).unwrap_err().contains("ring_vs_peer_qd32"));
        assert!(parse(&format!("{GOOD}ring_instr_qd32 = 5\n")).is_err());
        assert!(parse(&format!("{GOOD}typo_qd32 = 5\n")).is_err());
        assert!(parse(&format!("{GOOD}just words\n")).is_err());
        assert!(parse(&GOOD.replace("0.6", "-1")).is_err());
        assert!(parse(&GOOD.replace("0.6", "lots")).is_err());
    }
}
