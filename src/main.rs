//! The `slotproxy` binary: parses flags, loads the configuration, sets up
//! logging and runs the server until SIGINT or SIGTERM. Subcommands: `check`
//! (validate a cluster), `health` (probe a running proxy's admin server)
//! and `migrate status` (a running proxy's live migration).
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use slotproxy::config::{Config, LogFormat, Overrides};
use slotproxy::server::Reload;
use slotproxy::server::{LogLevelSetter, ReloadSource, Server};
use tracing::{error, info, warn};

/// A transparent sharding proxy for Redis Cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (every key is documented in config/slotproxy.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Frontend listen address, overrides frontend.listen.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Admin HTTP address (health, readiness, topology), overrides admin.listen.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Cluster seed node; repeat for several. Replaces cluster.seeds.
    #[arg(long = "seed", value_name = "HOST:PORT")]
    seeds: Vec<String>,
    /// Log filter, overrides log.level (e.g. `info`, `slotproxy=debug`).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a cluster like `redis-cli --cluster check`: all 16384 slots
    /// covered, every master with at least MIN_REPLICAS replicas, no slot
    /// migrating or importing, no failing node, every node agreeing on the
    /// slot map. Exits 1 on any problem.
    Check {
        /// Any node of the cluster, HOST:PORT.
        seed: String,
        /// Replicas every master must have.
        #[arg(long, default_value_t = 1)]
        min_replicas: usize,
        /// Timeout for each node's answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// ACL user for the nodes.
        #[arg(long)]
        user: Option<String>,
        /// Environment variable holding the nodes' password.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Connect to the nodes with TLS.
        #[arg(long)]
        tls: bool,
        /// CA certificates to verify the nodes with (PEM; default: the system's).
        #[arg(long, value_name = "FILE", requires = "tls")]
        cacert: Option<PathBuf>,
        /// Client certificate for nodes that require one (PEM).
        #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
        cert: Option<PathBuf>,
        /// Private key of --cert (PEM).
        #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
        key: Option<PathBuf>,
        /// Name the node certificates must carry (default: the node's host).
        #[arg(long, value_name = "NAME", requires = "tls")]
        sni: Option<String>,
        /// Accept any node certificate (testing only).
        #[arg(long, requires = "tls")]
        insecure: bool,
    },
    /// Probe a running slotproxy: exit 0 when its admin server answers
    /// `GET /healthz` (or `/readyz` with --ready) with 200, else 1. Needs no
    /// curl, so it serves as a container HEALTHCHECK in a distroless image.
    Health {
        /// Admin address, HOST:PORT. Default: admin.listen of --config (a
        /// wildcard address is probed on loopback), else 127.0.0.1:8391.
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        /// Ask /readyz (all slots served, not draining) instead of /healthz.
        #[arg(long)]
        ready: bool,
        /// Timeout for connecting and for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// The live migration from a standalone Redis (`[migration]`).
    Migrate {
        #[command(subcommand)]
        action: Migrate,
    },
}

#[derive(Debug, Subcommand)]
enum Migrate {
    /// Shows a running proxy's migration (its admin server's /migration):
    /// phase, keys copied, skipped and rewritten, bytes, rate, ETA (a
    /// progress bar on a terminal), dual-write lag and errors, the
    /// verifier's last result. Exits 1 if the proxy cannot be asked.
    Status {
        /// Admin address, HOST:PORT (default as for `health`).
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        /// Print the JSON document as the admin server gives it.
        #[arg(long)]
        json: bool,
        /// Show it again at this interval until interrupted.
        #[arg(long, value_name = "INTERVAL", value_parser = humantime::parse_duration)]
        watch: Option<Duration>,
        /// Timeout for connecting and for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// Runs `slotproxy migrate status`.
fn run_migrate_status(
    addr: &str,
    json: bool,
    watch: Option<Duration>,
    timeout: Duration,
) -> ExitCode {
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    loop {
        match probe(addr, "/migration", timeout) {
            Ok((200, body)) if json => println!("{}", body.trim_end()),
            Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) => {
                    if terminal && watch.is_some() {
                        // Clear the screen: the status redrawn in place.
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", slotproxy::migration::status::render(&v, terminal));
                }
                Err(e) => {
                    println!("{addr}/migration: not JSON: {e}");
                    return ExitCode::FAILURE;
                }
            },
            Ok((status, body)) => {
                println!("{addr}/migration: HTTP {status}: {}", body.trim_end());
                return ExitCode::FAILURE;
            }
            Err(e) => {
                println!("{addr}/migration: {e}");
                return ExitCode::FAILURE;
            }
        }
        match watch {
            Some(every) => std::thread::sleep(every),
            None => return ExitCode::SUCCESS,
        }
    }
}

/// Where `slotproxy health` looks without --admin.
const DEFAULT_ADMIN: &str = "127.0.0.1:8391";

/// Runs `slotproxy health`: one HTTP/1.1 GET over a plain TCP connection.
fn run_health(addr: &str, ready: bool, timeout: Duration) -> ExitCode {
    let path = if ready { "/readyz" } else { "/healthz" };
    match probe(addr, path, timeout) {
        Ok((200, body)) => {
            println!("{addr}{path}: {}", body.trim_end());
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            println!("{addr}{path}: HTTP {status}: {}", body.trim_end());
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("{addr}{path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// GETs `path` from `addr`; returns the status code and the body.
fn probe(addr: &str, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
    let mut last = std::io::Error::other("address resolves to nothing");
    for mut sa in addr.to_socket_addrs()? {
        // A wildcard listen address (0.0.0.0:8391) is reachable on loopback.
        if sa.ip().is_unspecified() {
            sa.set_ip(match sa.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        let mut stream = match std::net::TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => s,
            Err(e) => {
                last = e;
                continue;
            }
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {sa}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response);
        let status = response
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        return Ok((status, body.to_string()));
    }
    Err(last)
}

/// The admin address `slotproxy health` probes.
fn health_addr(
    admin: Option<&str>,
    config: Option<&Path>,
    global_admin: Option<&str>,
) -> Result<String, String> {
    if let Some(a) = admin.or(global_admin) {
        return Ok(a.to_string());
    }
    let Some(path) = config else {
        return Ok(DEFAULT_ADMIN.to_string());
    };
    let config = slotproxy::server::load_config(Some(path), &Overrides::default())
        .map_err(|e| e.to_string())?;
    config.admin.listen.ok_or_else(|| {
        format!(
            "admin.listen is not set in {}; pass --admin",
            path.display()
        )
    })
}

/// Runs `slotproxy check`.
fn run_check(
    seed: &str,
    link: &slotproxy::backend::Link,
    min_replicas: usize,
    timeout: std::time::Duration,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotproxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(slotproxy::cluster::check::check(
        seed,
        link,
        min_replicas,
        timeout,
    ));
    for line in &report.lines {
        println!("{line}");
    }
    if report.problems.is_empty() {
        println!("cluster at {seed}: OK");
        ExitCode::SUCCESS
    } else {
        println!(
            "cluster at {seed}: {} problem(s) found",
            report.problems.len()
        );
        ExitCode::FAILURE
    }
}

/// jemalloc, configured in `.cargo/config.toml` to give freed pages back
/// after 1 s: idle clients' memory is returned when busy ones go quiet
/// (`docs/benchmarks.md`, idle memory).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health {
        admin,
        ready,
        timeout,
    }) = &cli.command
    {
        return match health_addr(
            admin.as_deref(),
            cli.config.as_deref(),
            cli.admin.as_deref(),
        ) {
            Ok(addr) => run_health(&addr, *ready, *timeout),
            Err(e) => {
                // Docker reserves HEALTHCHECK exit code 2: every failure is 1.
                println!("slotproxy health: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Migrate {
        action:
            Migrate::Status {
                admin,
                json,
                watch,
                timeout,
            },
    }) = &cli.command
    {
        return match health_addr(
            admin.as_deref(),
            cli.config.as_deref(),
            cli.admin.as_deref(),
        ) {
            Ok(addr) => run_migrate_status(&addr, *json, *watch, *timeout),
            Err(e) => {
                println!("slotproxy migrate status: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Check {
        seed,
        min_replicas,
        timeout,
        user,
        password_env,
        tls,
        cacert,
        cert,
        key,
        sni,
        insecure,
    }) = &cli.command
    {
        let backend = slotproxy::config::BackendConfig {
            username: user.clone(),
            password_env: password_env.clone(),
            tls: slotproxy::config::BackendTlsConfig {
                enabled: *tls,
                ca_file: cacert.clone(),
                cert_file: cert.clone(),
                key_file: key.clone(),
                server_name: sni.clone(),
                insecure_skip_verify: *insecure,
            },
            ..Default::default()
        };
        let link = backend
            .credentials()
            .and_then(|_| slotproxy::backend::Link::from_config(&backend));
        return match link {
            Ok(link) => run_check(seed, &link, *min_replicas, *timeout),
            Err(e) => {
                eprintln!("slotproxy check: {e}");
                ExitCode::from(2)
            }
        };
    }
    let overrides = Overrides {
        listen: cli.listen,
        admin: cli.admin,
        seeds: cli.seeds,
        log_level: cli.log_level,
    };
    let config = match slotproxy::server::load_config(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slotproxy: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    let log_level = init_logging(&config);
    // One thread by default: measured faster than a work-stealing pool on
    // a 2-core box shared with the cluster (docs/benchmarks.md).
    let built = match config.runtime.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b.enable_all().thread_name("slotproxy").build()
        }
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotproxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let source = ReloadSource {
            path: cli.config.clone(),
            overrides: overrides.clone(),
            log_level: Some(log_level),
        };
        let server = match Server::start_with_reload(&config, source).await {
            Ok(s) => s,
            Err(e) => {
                error!(listen = %config.frontend.listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let token = server.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("shutting down: draining");
            token.cancel();
        });
        #[cfg(unix)]
        {
            let reloader = server.reloader();
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    return;
                };
                while hup.recv().await.is_some() {
                    if let Err(e) = reloader.reload() {
                        warn!(error = %e, "SIGHUP: configuration not reloaded");
                    }
                }
            });
        }
        server.run_until_shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Sets up logging; returns a function that changes the filter at run time.
fn init_logging(config: &Config) -> LogLevelSetter {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let ansi = use_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match config.log.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    Box::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// Colour codes only for a person at a terminal: a file, a pipe, journald
/// or `docker logs` would keep them as stray escape bytes. `NO_COLOR` set
/// to anything but empty turns them off there too (no-color.org).
fn use_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
    }
}
