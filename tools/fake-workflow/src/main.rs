//! `fake-workflow --port 8787 [--host 127.0.0.1]`: runs the fake Workflow Service.

use std::net::SocketAddr;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).init();
    let args: Vec<String> = std::env::args().collect();
    let host = arg(&args, "--host").unwrap_or_else(|| "127.0.0.1".to_owned());
    let port: u16 = arg(&args, "--port").map_or(Ok(8787), |p| p.parse())?;
    let addr: SocketAddr = format!("{host}:{port}").parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "fake Workflow Service listening");
    fake_workflow::serve(listener).await?;
    Ok(())
}
