//! The `argilla-gateway` command: `serve` (the default), `check`, `hash-password`, `healthcheck`
//! and `users`.

use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use argilla_gateway::{
    config::{Config, LogFormat},
    error::Error,
    reload::{ReloadOutcome, Users},
    server::{self, Started, State},
    users::{self, UserStore},
};
use clap::{Parser, Subcommand};

/// mimalloc: measurably faster than glibc's allocator on the request path, and much faster than
/// musl's (the container image's static build).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::net::TcpListener;

/// An authenticating, workspace-checking reverse proxy for Argilla 1.x.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file (default: gateway.toml in the working directory, if it exists).
    #[arg(long, short, global = true, env = "ARGILLA_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Load the configuration and the users file exactly as `serve` would, and report on
    /// stdout: every problem, every warning `serve` would log, the users in force. Exits 1 when
    /// something is wrong, or when only the built-in default user would be served.
    Check {
        /// The users file to check instead of the configured one.
        users_file: Option<PathBuf>,
        /// Accept serving Argilla's built-in default user (no users file).
        #[arg(long)]
        allow_default_user: bool,
    },
    /// Exit 0 when the gateway configured here answers `GET /healthz` (for container health
    /// checks: no curl needed), 1 otherwise.
    Healthcheck,
    /// Read a password (terminal without echo, or stdin) and print its bcrypt hash.
    HashPassword {
        /// bcrypt cost (4 to 31).
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
    },
    /// Add, change, disable, remove and list the users of the users file, in place.
    Users(argilla_gateway::users_cmd::UsersArgs),
}

fn main() -> ExitCode {
    // Transparent huge pages make every 2 MiB region the allocator touches resident in full:
    // with them, the gateway's resident size doubles for no measurable speed. Best effort.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config.as_deref()),
        Command::Check {
            users_file,
            allow_default_user,
        } => check(cli.config.as_deref(), users_file, allow_default_user),
        Command::HashPassword { cost } => hash_password(cost),
        Command::Healthcheck => healthcheck(cli.config.as_deref()),
        Command::Users(args) => argilla_gateway::users_cmd::run(cli.config.as_deref(), args),
    }
}

/// Logs go to stderr through a writer thread, so that no request waits on a write to stderr.
/// It is lossless (a full buffer makes callers wait rather than drop lines); the returned guard
/// flushes what is left when it is dropped at exit.
fn init_tracing(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // Lines waiting for the writer. The default (128 000) is 4 MB of memory touched at
        // start; a full buffer makes loggers wait, it never drops a line.
        .buffered_lines_limit(8192)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

fn serve(config_path: Option<&std::path::Path>) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("argilla-gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _flush_logs_at_exit = init_tracing(config.log_format);
    // One CPU: a single-threaded runtime, which is much cheaper than a multi-threaded one
    // with one worker (no parking, stealing or cross-thread wake-ups on the request path).
    let runtime = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // Blocking work still running (a reload, a bcrypt check) must not hold the exit back.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Error> {
    if let Some(file) = &config.file {
        tracing::info!(config = %file.display(), "configuration file read");
    } else {
        tracing::info!(
            "no configuration file (--config, ARGILLA_GATEWAY_CONFIG or ./gateway.toml): \
             built-in defaults and the environment"
        );
    }
    let users = with_sso_check(
        Users::open(&config.auth)?.after_apply(release_memory),
        &config,
    )?;
    release_memory();
    if let Some(path) = users.path() {
        let store = users.snapshot();
        tracing::info!(file = %path.display(), "{}", users::describe(&store));
        users::log_warnings(&store);
    } else {
        tracing::warn!("{DEFAULT_USER_WARNING}");
    }
    for warning in config_warnings(&config) {
        tracing::warn!("{warning}");
    }
    let Started {
        state,
        users,
        reloader: _reloader,
    } = State::start_with(config, users)?;
    let config = &state.config;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    tracing::info!(
        listen = %config.listen,
        upstream = %config.upstream.url,
        mode = %config.upstream.mode,
        version = env!("CARGO_PKG_VERSION"),
        "argilla-gateway listening"
    );
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })?,
        ),
        None => None,
    };
    let probing = state.clone();
    tokio::spawn(async move {
        let (url, mode) = (&probing.config.upstream.url, probing.config.upstream.mode);
        probing.check_upstream().await.log(url, mode);
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(listener) = metrics {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, "metrics on /metrics");
        }
        let mut stopped = stopped.clone();
        tokio::spawn(server::run_metrics(listener, state.clone(), async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
    }
    let shutdown = async move {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            tokio::select! {
                _ = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => {
                    let users = users.clone();
                    tokio::task::spawn_blocking(move || log_hangup(&users, users.reload()));
                }
                _ = async { terminate.as_mut()?.recv().await }, if terminate.is_some() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stop.send(true);
    };
    server::run(listener, state, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// With single sign-on mapping people by e-mail, a users file in which two users share an
/// address is refused: at start, and at every reload.
fn with_sso_check(users: Users, config: &Config) -> Result<Users, Error> {
    let Some(oidc) = &config.oidc else {
        return Ok(users);
    };
    argilla_gateway::oidc::check_users(oidc, &users.snapshot()).map_err(|message| {
        Error::Users {
            path: users
                .path()
                .unwrap_or(Path::new("(default user)"))
                .to_owned(),
            message,
        }
    })?;
    tracing::info!(
        issuer = oidc.issuer,
        password_login = oidc.password_login,
        "single sign-on configured: /oauth2/start, /oauth2/callback, /oauth2/sign_out"
    );
    let oidc = oidc.clone();
    Ok(users.with_check(Box::new(move |store| {
        argilla_gateway::oidc::check_users(&oidc, store)
    })))
}

/// Says what a `SIGHUP` did, whatever it was (a reload that applied, or failed, says so itself).
fn log_hangup(users: &Users, outcome: Result<ReloadOutcome, Error>) {
    match (users.path(), outcome) {
        (None, _) => tracing::info!("SIGHUP: no users file to reload (the default user is served)"),
        (Some(_), Ok(ReloadOutcome::Applied)) => {}
        (Some(path), Ok(ReloadOutcome::Unchanged)) => tracing::info!(
            file = %path.display(),
            users = users.status().users,
            "SIGHUP: users file unchanged"
        ),
        (Some(path), Ok(ReloadOutcome::StillFailing) | Err(_)) => tracing::warn!(
            file = %path.display(),
            error = users.status().last_error.unwrap_or_default(),
            "SIGHUP: users file still invalid; the last good users stay in force"
        ),
    }
}

/// Hands the memory mimalloc keeps but no longer uses back to the system at once. Loading a
/// users file needs several times the memory of the users it yields (the YAML parser's events);
/// left to itself, mimalloc would keep most of that resident for as long as the gateway runs.
#[expect(
    unsafe_code,
    reason = "one FFI call into the allocator this binary links"
)]
fn release_memory() {
    // SAFETY: `mi_collect` has no preconditions; it may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// What serving the built-in default user means.
const DEFAULT_USER_WARNING: &str = "no users file (ARGILLA_LOCAL_AUTH_USERS_DB_FILE unset and no \
    .users.yml here): serving Argilla's DEFAULT user `argilla` (password 1234 unless \
    ARGILLA_LOCAL_AUTH_DEFAULT_PASSWORD is set). Do not expose this gateway.";

/// The configuration's warnings, as `serve` logs them and `check` prints them.
fn config_warnings(config: &Config) -> Vec<&'static str> {
    let mut warnings = Vec::new();
    if config.upstream.api_key_is_default {
        warnings.push(
            "ARGILLA_GATEWAY_UPSTREAM_API_KEY is not set: using Argilla's default key towards \
             the upstream; give the upstream a superuser with a secret key",
        );
    }
    if config.auth.secret_key.is_none() {
        warnings.push(
            "ARGILLA_LOCAL_AUTH_SECRET_KEY is not set: web-app sessions use a random key, end \
             when the gateway restarts and are not shared between replicas",
        );
    }
    warnings
}

#[expect(clippy::print_stdout, reason = "the report is this command's output")]
fn check(
    config_path: Option<&std::path::Path>,
    users_file: Option<PathBuf>,
    allow_default_user: bool,
) -> ExitCode {
    let mut config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            println!("configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    if users_file.is_some() {
        config.auth.users_file = users_file;
    }
    match &config.file {
        Some(file) => println!("configuration file: {}", file.display()),
        None => println!("configuration file: none (built-in defaults and the environment)"),
    }
    for (key, value) in config.summary() {
        println!("{key} = {value}");
    }
    for warning in config_warnings(&config) {
        println!("warning: {warning}");
    }
    let store = match &config.auth.users_file {
        Some(path) => UserStore::load(path),
        None => UserStore::default_user(
            &config.auth.default_api_key,
            &config.auth.default_password_hash,
        ),
    };
    let store = match store {
        Ok(store) => store,
        Err(e) => {
            println!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(oidc) = &config.oidc
        && let Err(e) = argilla_gateway::oidc::check_users(oidc, &store)
    {
        println!("{e}");
        return ExitCode::FAILURE;
    }
    for warning in &store.warnings {
        println!("warning: {warning}");
    }
    if store.warning_count > store.warnings.len() {
        println!(
            "warning: {} more warnings like these",
            store.warning_count - store.warnings.len()
        );
    }
    println!("{}", users::describe(&store));
    if config.auth.users_file.is_none() {
        println!("warning: {DEFAULT_USER_WARNING}");
        if !allow_default_user {
            println!(
                "check: only the built-in default user would be served; configure a users file \
                 (ARGILLA_LOCAL_AUTH_USERS_DB_FILE, auth.users_file, or `check USERS_FILE`), or \
                 pass --allow-default-user to accept it"
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn hash_password(cost: u32) -> ExitCode {
    if cost < users::MIN_GOOD_COST {
        eprintln!(
            "hash-password: warning: cost {cost} is below {}: fast to guess if the file leaks",
            users::MIN_GOOD_COST
        );
    }
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ").and_then(|first| {
            let again = rpassword::prompt_password("Password again: ")?;
            if first == again {
                Ok(first)
            } else {
                Err(std::io::Error::other("the two passwords differ"))
            }
        })
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map(|_| line.trim_end_matches(['\n', '\r']).to_owned())
    };
    let password = match password {
        Ok(password) if !password.is_empty() => password,
        Ok(_) => {
            eprintln!("hash-password: the password is empty");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("hash-password: cannot read the password: {e}");
            return ExitCode::FAILURE;
        }
    };
    // bcrypt reads only 72 bytes; the gateway refuses longer passwords at login, so none is
    // hashed here either.
    match bcrypt::non_truncating_hash(password, cost) {
        Ok(hash) => {
            #[expect(clippy::print_stdout, reason = "the hash is this command's output")]
            {
                println!("{hash}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(config_path: Option<&std::path::Path>) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let tls = match config
        .tls
        .as_ref()
        .map(argilla_gateway::tls::pinned_client)
        .transpose()
    {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match probe(addr, tls) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("healthcheck: {addr} answered, but not 200");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One `GET /healthz` on `addr`, over TLS when the main listener speaks it, bounded to a few
/// seconds.
fn probe(
    addr: std::net::SocketAddr,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
) -> std::io::Result<bool> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(3);
    let tcp = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut stream: Box<dyn ReadWrite> = match tls {
        Some(config) => {
            let name = rustls_pki_types::ServerName::from(addr.ip());
            let connection = tokio_rustls::rustls::ClientConnection::new(config, name)
                .map_err(std::io::Error::other)?;
            Box::new(tokio_rustls::rustls::StreamOwned::new(connection, tcp))
        }
        None => Box::new(tcp),
    };
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 16];
    let read = stream.read(&mut head)?;
    Ok(head[..read].starts_with(b"HTTP/1.1 200"))
}

/// A byte stream, plain or TLS.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}
