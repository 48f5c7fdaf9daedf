//! Uploads a file through the broker with a progress bar, asks the
//! orchestrator to process it and follows the task until it is done.
//!
//! ```sh
//! BROKER_URL=http://localhost:8000 cargo run --example upload -- invoice.pdf
//! cargo run --example upload -- data.csv --key incoming/data.csv --orchestrator http://localhost:8001
//! ```

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use resource_broker::{
    agents::extract::DocumentType,
    client::{BrokerClient, PutOptions},
};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The file to upload.
    file: PathBuf,
    /// Object key (default: incoming/<file name>).
    #[arg(long)]
    key: Option<String>,
    /// Content type (default: from the extension).
    #[arg(long)]
    content_type: Option<String>,
    /// The orchestrator agent; `--orchestrator none` only uploads.
    #[arg(
        long,
        env = "ORCHESTRATOR_URL",
        default_value = "http://localhost:8001"
    )]
    orchestrator: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name = args
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload")
        .to_owned();
    let key = args.key.unwrap_or_else(|| format!("incoming/{name}"));
    // The agents' own guess, so that .tsv goes in as a CSV as well.
    let content_type = args.content_type.unwrap_or_else(|| {
        match DocumentType::from_extension(&name) {
            Some(DocumentType::Pdf) => "application/pdf",
            Some(DocumentType::Csv) => "text/csv",
            None => "application/octet-stream",
        }
        .to_owned()
    });

    let broker = BrokerClient::from_env().await?;
    let size = std::fs::metadata(&args.file)?.len();
    let bar = ProgressBar::new(size).with_style(ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )?);
    bar.set_message(format!("uploading {key}"));
    let progress = bar.clone();
    let put = broker
        .put_file(
            &key,
            &args.file,
            PutOptions::content_type(content_type),
            move |p| progress.set_position(p.sent),
        )
        .await?;
    bar.finish_with_message(format!("uploaded {key}"));
    println!("{} bytes, etag {}", put.size, put.etag);
    if args.orchestrator == "none" {
        return Ok(());
    }

    let http = reqwest::Client::new();
    let call = |method: &'static str, params: Value| {
        let (http, url) = (
            http.clone(),
            format!("{}/message", args.orchestrator.trim_end_matches('/')),
        );
        async move {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
            let reply: Value = http.post(url).json(&body).send().await?.json().await?;
            match reply.get("error") {
                Some(error) => anyhow::bail!("{method}: {}", error["message"]),
                None => Ok(reply["result"].clone()),
            }
        }
    };
    let task = call("process_document", json!({"s3_key": key})).await?;
    let task_id = task["task_id"].as_str().unwrap_or_default().to_owned();
    println!("task {task_id} submitted");
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(100));
    loop {
        let status = call("get_task_status", json!({"task_id": task_id})).await?;
        spinner.set_message(format!("task {}", status["status"].as_str().unwrap_or("?")));
        if matches!(status["status"].as_str(), Some("completed" | "failed")) {
            spinner.finish_and_clear();
            println!("{}", serde_json::to_string_pretty(&status)?);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
