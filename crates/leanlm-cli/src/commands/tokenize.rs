use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArg,
    #[command(flatten)]
    text: super::TextArg,
    /// Print only the ids, as a list (like llama-tokenize --ids).
    #[arg(long)]
    ids: bool,
    /// Do not prepend BOS even if the model asks for it.
    #[arg(long)]
    no_bos: bool,
    /// Treat special-token text such as <|im_start|> as plain text.
    #[arg(long)]
    no_parse_special: bool,
    /// Print JSON: {"ids": [...], "pieces": [...]}.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let text = a.text.read()?;
    // Like llama-tokenize: the vocabulary alone, whatever the architecture.
    let tok = a.model.load_tokenizer()?;
    let ids = tok.encode(&text, !a.no_bos, !a.no_parse_special)?;
    if a.json {
        let pieces: Vec<String> = ids
            .iter()
            .map(|&i| String::from_utf8_lossy(tok.token_bytes(i)).into_owned())
            .collect();
        println!("{}", serde_json::json!({ "ids": ids, "pieces": pieces }));
    } else if a.ids {
        let s: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("[{}]", s.join(", "));
    } else {
        for id in &ids {
            println!(
                "{id:>6} -> '{}'",
                String::from_utf8_lossy(tok.token_bytes(*id))
            );
        }
    }
    Ok(())
}
