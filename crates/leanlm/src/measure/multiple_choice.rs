//! Zero-shot multiple choice (HellaSwag and any task in the same shape): each choice is
//! scored as a continuation of the context, `context + " " + choice`, by the log-probs
//! of the tokens after the part all choices share. `acc` picks the largest sum of
//! log-probs; `acc_norm` the largest mean per token, which is llama.cpp's HellaSwag score.

use crate::error::{Error, Result};
use crate::model::{Logits, Model};
use crate::tokenizer::Tokenizer;

use super::perplexity::nll_of;

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub context: String,
    pub choices: Vec<String>,
    pub gold: usize,
}

/// llama.cpp's HellaSwag text layout: per task six lines (context, gold index 0–3, four
/// endings).
pub fn parse_hellaswag(text: &str) -> Result<Vec<Task>> {
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() || !lines.len().is_multiple_of(6) {
        return Err(Error::InvalidInput(format!(
            "HellaSwag file has {} lines; the layout is 6 lines per task (context, gold 0-3, four endings)",
            lines.len()
        )));
    }
    lines
        .chunks_exact(6)
        .enumerate()
        .map(|(i, l)| {
            let gold = l[1]
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&g| g < 4)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "HellaSwag task {} (line {}): gold label {:?} is not 0-3",
                        i + 1,
                        i * 6 + 2,
                        l[1]
                    ))
                })?;
            Ok(Task {
                context: l[0].to_string(),
                choices: l[2..6].iter().map(|s| s.to_string()).collect(),
                gold,
            })
        })
        .collect()
}

/// One JSON object per line: `{"context": "...", "choices": ["...", ...], "gold": 0}`.
pub fn parse_jsonl(text: &str) -> Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |why: &str| Error::InvalidInput(format!("line {}: {why}", i + 1));
        let j: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let context = j["context"]
            .as_str()
            .ok_or_else(|| bad("missing string field \"context\""))?;
        let choices: Vec<String> = j["choices"]
            .as_array()
            .ok_or_else(|| bad("missing array field \"choices\""))?
            .iter()
            .map(|c| {
                c.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("choices must be strings"))
            })
            .collect::<Result<_>>()?;
        let gold = j["gold"]
            .as_u64()
            .map(|g| g as usize)
            .ok_or_else(|| bad("missing integer field \"gold\""))?;
        if choices.len() < 2 || gold >= choices.len() {
            return Err(bad("need at least 2 choices and gold < number of choices"));
        }
        tasks.push(Task {
            context: context.to_string(),
            choices,
            gold,
        });
    }
    if tasks.is_empty() {
        return Err(Error::InvalidInput("no tasks in the file".into()));
    }
    Ok(tasks)
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct McReport {
    pub tasks: usize,
    pub acc: f64,
    pub acc_stderr: f64,
    pub acc_norm: f64,
    pub acc_norm_stderr: f64,
}

/// Sum and count of the log-probs of each choice's own tokens.
pub fn choice_logprobs(model: &Model, tok: &Tokenizer, task: &Task) -> Result<Vec<(f64, usize)>> {
    let seqs: Vec<Vec<u32>> = task
        .choices
        .iter()
        .map(|c| tok.encode(&format!("{} {}", task.context, c), true, false))
        .collect::<Result<_>>()?;
    let prefix = (0..seqs[0].len())
        .take_while(|&k| seqs.iter().all(|s| s.get(k) == seqs[0].get(k)))
        .count();
    if prefix == 0 {
        return Err(Error::InvalidInput(format!(
            "task {:?}: the choices share no context tokens",
            task.context
        )));
    }
    let mut cache = model.new_cache();
    // Logits of the last shared token: they predict each choice's first token.
    let first = model.forward(&seqs[0][..prefix], &mut cache, Logits::Last)?;
    let v = model.vocab_size();
    seqs.iter()
        .enumerate()
        .map(|(k, s)| {
            let ending = &s[prefix..];
            if ending.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "task {:?}: choice {k} adds no tokens",
                    task.context
                )));
            }
            let mut sum = -nll_of(&first, ending[0]);
            if ending.len() > 1 {
                let mut c = cache.clone();
                let logits = model.forward(&ending[..ending.len() - 1], &mut c, Logits::All)?;
                for (j, &t) in ending[1..].iter().enumerate() {
                    sum -= nll_of(&logits[j * v..(j + 1) * v], t);
                }
            }
            Ok((sum, ending.len()))
        })
        .collect()
}

fn first_max(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Score every task; `on_task(i, n, running)` after each.
pub fn evaluate(
    model: &Model,
    tok: &Tokenizer,
    tasks: &[Task],
    mut on_task: impl FnMut(usize, usize, &McReport),
) -> Result<McReport> {
    let (mut hits, mut hits_norm) = (0usize, 0usize);
    let mut r = McReport::default();
    for (i, task) in tasks.iter().enumerate() {
        let lp = choice_logprobs(model, tok, task)?;
        let sums: Vec<f64> = lp.iter().map(|&(s, _)| s).collect();
        let means: Vec<f64> = lp.iter().map(|&(s, n)| s / n as f64).collect();
        hits += (first_max(&sums) == task.gold) as usize;
        hits_norm += (first_max(&means) == task.gold) as usize;
        r = report(i + 1, hits, hits_norm);
        on_task(i, tasks.len(), &r);
    }
    Ok(r)
}

fn report(n: usize, hits: usize, hits_norm: usize) -> McReport {
    // Binomial standard error of an accuracy p over n tasks: sqrt(p(1-p)/n).
    let se = |p: f64| (p * (1.0 - p) / n as f64).sqrt();
    let (acc, acc_norm) = (hits as f64 / n as f64, hits_norm as f64 / n as f64);
    McReport {
        tasks: n,
        acc,
        acc_stderr: se(acc),
        acc_norm,
        acc_norm_stderr: se(acc_norm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellaswag_layout_parses_and_rejects_bad_gold() {
        let ok = "ctx\n2\na\nb\nc\nd\n";
        assert_eq!(parse_hellaswag(ok).unwrap()[0].gold, 2);
        assert!(parse_hellaswag("ctx\n7\na\nb\nc\nd\n")
            .unwrap_err()
            .to_string()
            .contains("task 1 (line 2)"));
        assert!(parse_hellaswag("ctx\n1\na\nb\n")
            .unwrap_err()
            .to_string()
            .contains("6 lines per task"));
    }

    #[test]
    fn jsonl_parses_and_names_the_bad_line() {
        let t = parse_jsonl("{\"context\": \"c\", \"choices\": [\"x\", \"y\"], \"gold\": 1}\n")
            .unwrap();
        assert_eq!(t[0].choices, vec!["x", "y"]);
        let e =
            parse_jsonl("{\"context\": \"c\", \"choices\": [\"x\"], \"gold\": 0}\n").unwrap_err();
        assert!(e.to_string().contains("line 1"));
    }

    /// 3 tasks, 2 right: p = 2/3, stderr = sqrt(2/9/3) ≈ 0.2722.
    #[test]
    fn accuracy_and_stderr_hand_checked() {
        let r = report(3, 2, 1);
        assert!((r.acc - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.acc_stderr - (2.0f64 / 27.0).sqrt()).abs() < 1e-12);
        assert!((r.acc_norm - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_go_to_the_first_choice() {
        assert_eq!(first_max(&[-1.0, -1.0, -2.0]), 0);
    }
}
