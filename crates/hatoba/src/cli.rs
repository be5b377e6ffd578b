//! The command line: every command, flag and help text, in one place.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "hatoba",
    version,
    about = "Deploy an app from a commit to production with zero downtime: \
             step-by-step traffic shifting, automatic analysis and rollback, full history.",
    after_help = concat!(
        "Examples:\n",
        "  hatoba demo                          see the whole idea in a minute\n",
        "  hatoba validate -f hatoba.yaml       check a spec, every mistake at once\n",
        "  hatoba history web --env production  every deployment of `web` in production\n",
        "  hatoba status --output json          current versions, for scripts\n",
        "  hatoba --server http://host:7400 status   ask a server elsewhere (token: HATOBA_TOKEN)\n",
        "\n",
        "Exit codes:\n",
        "  0  success\n",
        "  1  the operation failed\n",
        "  2  bad input or usage (invalid spec, unknown flag, unreadable file)\n",
        "  3  the Hatoba server could not be reached\n",
        "  4  not found (service, environment, deployment, state directory)\n",
        "  5  conflict (another deployment of the service is in progress) or refused (a wrong token)\n",
        "  6  not built yet in this version of Hatoba",
    )
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Where Hatoba keeps its state (history database, logs, server address).
    #[arg(
        long,
        global = true,
        env = "HATOBA_STATE_DIR",
        default_value = ".hatoba",
        value_name = "DIR"
    )]
    pub(crate) state_dir: PathBuf,
    /// Read the history from this PostgreSQL database instead of the state
    /// directory's SQLite file (`postgres://user@host:5432/hatoba`).
    #[arg(long, global = true, env = "HATOBA_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,
    /// The Hatoba server to talk to, on this machine or another one
    /// (`http://HOST:PORT`, what `hatoba up --api` listens on); its token
    /// comes from HATOBA_TOKEN, else the state directory's `token` file.
    /// Default: the server of the state directory (its `server.json`).
    #[arg(long, global = true, env = "HATOBA_SERVER", value_name = "URL")]
    pub(crate) server: Option<String>,
    /// How to print results: `text` for people, `json` for scripts.
    #[arg(long, short = 'o', global = true, env = "HATOBA_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check a spec and report every mistake with file, line and column.
    #[command(
        after_help = "Examples:\n  hatoba validate\n  hatoba validate -f examples/quickstart/hatoba.yaml --output json\n\n\
                            Exits 0 when the spec is valid, 2 with the diagnostics on stderr when not."
    )]
    Validate(FileArg),
    /// Print the JSON Schema of hatoba.yaml (for editors and linters).
    #[command(after_help = "Example:\n  hatoba schema > hatoba.schema.json")]
    Schema,
    /// Print the OpenAPI 3.1 document of the server's API (`docs/openapi.json`).
    #[command(after_help = "Example:\n  hatoba openapi > docs/openapi.json")]
    Openapi,
    /// List past deployments, newest first.
    #[command(
        after_help = "Examples:\n  hatoba history\n  hatoba history web --env production --limit 5\n  hatoba history --output json"
    )]
    History(HistoryArgs),
    /// Show the version each service runs in each environment, and any deployment in progress.
    #[command(after_help = "Examples:\n  hatoba status\n  hatoba status web --output json")]
    Status(StatusArgs),
    /// Run Hatoba's proxy alone over fixed backends from a routes file (for
    /// benchmarks and tests; `hatoba up` runs it with the controller).
    #[command(after_help = "Example:\n  hatoba proxy --routes routes.toml\n\n\
                            The routes file (TOML):\n\
                            \x20 listen = \"127.0.0.1:8080\"\n\
                            \x20 admin = \"127.0.0.1:9901\"   # optional: /metrics, /routes, /healthz\n\
                            \x20 service = \"web\"\n\
                            \x20 [[group]]\n\
                            \x20 role = \"stable\"            # stable | canary | preview\n\
                            \x20 version = \"v1\"\n\
                            \x20 weight = 100\n\
                            \x20 backends = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n\n\
                            SIGHUP reloads the file (a bad file keeps the running table); SIGTERM or Ctrl-C\n\
                            stops accepting and lets requests in flight finish.")]
    Proxy {
        /// The routes file.
        #[arg(long, value_name = "FILE")]
        routes: PathBuf,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  hatoba completions bash > /etc/bash_completion.d/hatoba\n  hatoba completions zsh > \"${fpath[1]}/_hatoba\"\n  hatoba completions fish > ~/.config/fish/completions/hatoba.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Run the Hatoba server in the foreground: proxies on the spec's routes,
    /// deployments, and the API the other commands use.
    #[command(
        after_help = "Examples:\n  hatoba up -f examples/quickstart/hatoba.yaml\n  hatoba up --env staging --state-dir /var/lib/hatoba\n  hatoba up --env staging --env production\n  hatoba up --api 0.0.0.0:7400   the API for other machines (plain HTTP: prefer an SSH tunnel)\n\n\
                            Services start with no instance: deploy a version with `hatoba deploy`.\n\
                            Ctrl-C stops every instance gracefully (--keep-running leaves them up)."
    )]
    Up(UpArgs),
    /// Build a Docker service's image from its `docker.build` on the local
    /// Docker Engine (no registry), tagged with the version.
    #[command(
        after_help = "Examples:\n  hatoba build web --version v2\n  hatoba build web --version v2 -f examples/docker/hatoba.yaml\n\n\
                            Streams the build's output to stderr and prints the image id on stdout.\n\
                            Exits 0 when built, 1 when the build failed (its output says why) or no Docker Engine answers,\n\
                            2 for a bad spec or a service without `docker.build`, 4 for an unknown service."
    )]
    Build(BuildArgs),
    /// Deploy a version of a service through its strategy (needs `hatoba up`).
    #[command(
        after_help = "Examples:\n  hatoba deploy web --version v2 --wait\n  hatoba deploy web --version v2 --wait=complete\n  hatoba deploy web --version v3 --set ERROR_RATE=0.2\n\n\
                            With --wait, exits 0 once the new version serves all traffic (the previous one may stay warm\n\
                            for an instant rollback; --wait=complete waits until it stopped and the deployment succeeded),\n\
                            1 when it was rolled back or failed,\n\
                            3 when no server runs for the state directory, 5 when another deployment is in progress."
    )]
    Deploy(DeployArgs),
    /// Move a paused rollout on to its next step, or to 100 % with --full.
    Promote {
        /// The service.
        service: String,
        /// Skip the remaining steps.
        #[arg(long)]
        full: bool,
        /// The environment (needed when the server runs several that have the service).
        #[arg(long, short = 'e')]
        env: Option<String>,
    },
    /// Stop a rollout and send all traffic back to the stable version.
    Abort {
        /// The service.
        service: String,
        /// The environment (needed when the server runs several that have the service).
        #[arg(long, short = 'e')]
        env: Option<String>,
    },
    /// Return a service to its previous (or a named) succeeded version, through its strategy.
    Rollback {
        /// The service.
        service: String,
        /// The version to return to; default: the previous succeeded one that was promoted on evidence.
        #[arg(long)]
        to: Option<String>,
        /// The environment (needed when the server runs several that have the service).
        #[arg(long, short = 'e')]
        env: Option<String>,
    },
    /// Make the running `hatoba up` read its spec file again (as SIGHUP does).
    #[command(
        after_help = "Examples:\n  hatoba reload\n  hatoba reload --server http://10.0.0.5:7400\n  kill -HUP $(jq .pid STATE/server.json)   the same, by signal\n\n\
                            The file is checked first: an invalid spec changes nothing and prints its diagnostics (exit 2).\n\
                            New services listen (deploy them with `hatoba deploy`); changed ones use the new spec from their\n\
                            next deployment; a deployment in progress keeps the spec it started with. A spec that removes a\n\
                            service still running is refused (exit 5)."
    )]
    Reload,
    /// Follow the deployment of a service in progress, as `deploy --wait`
    /// does, until it ends (exit 0 when it succeeded).
    Watch {
        /// The service.
        service: String,
        /// The environment (needed when the server runs several that have the service).
        #[arg(long, short = 'e')]
        env: Option<String>,
    },
    /// Approve a deployment that waits for approval (an environment with
    /// `requireApproval`); whoever deployed it cannot approve it.
    Approve {
        /// The deployment id.
        deployment: String,
        /// Who approves (default: $USER, $LOGNAME, or the account name).
        #[arg(long = "as", value_name = "NAME")]
        actor: Option<String>,
    },
    /// Every analysis measurement of a deployment: metric, value, verdict.
    Analysis {
        /// A deployment id (`hatoba history` lists them), or a service's
        /// name for its newest deployment.
        #[arg(value_name = "DEPLOYMENT|SERVICE")]
        deployment: String,
    },
    /// Print the output of a service's instances.
    Logs {
        /// The service.
        service: String,
        /// Keep printing new lines (Ctrl-C stops).
        #[arg(long, short)]
        follow: bool,
        /// Lines of each instance's log to start with.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: usize,
        /// The environment (needed when the server runs several that have the service).
        #[arg(long, short = 'e')]
        env: Option<String>,
    },
    /// Print what happens to deployments: the server's events as stored,
    /// or with -f live as they happen.
    #[command(
        after_help = "Examples:\n  hatoba events              the newest 100 events\n  hatoba events web -f       web's events, then live (Ctrl-C stops)\n  hatoba events --deployment d-01kbx2... --output json\n  hatoba events --after 1200 -f\n\n\
                      With -f the stream resumes after the last event printed when the connection\n\
                      drops or `hatoba up` restarts (retrying with back-off, said on stderr)."
    )]
    Events(EventsArgs),
    /// Store, list, rotate and remove secrets: values kept encrypted by the
    /// server and given to instances in their environment only.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Explain what is going on with a service: instances, probes, weights,
    /// recent events and log lines, history.
    Diagnose {
        /// The service.
        service: String,
        /// The environment (needed when the server runs several that have the service).
        #[arg(long, short = 'e')]
        env: Option<String>,
    },
    /// The demo app, as the demo's instances run it (PORT, DEMO_ERROR_RATE,
    /// DEMO_READY_AFTER from the environment).
    #[command(hide = true, name = "demo-app")]
    DemoApp {
        /// The version `/` answers with.
        #[arg(long, default_value = "v1")]
        version_label: String,
    },
    /// The data plane as its own process, started and driven by `hatoba up`
    /// over `STATE_DIR/dataplane.sock`; it keeps serving the last route
    /// tables when the controller stops or crashes.
    #[command(hide = true)]
    Dataplane {
        /// Where to serve the traffic metrics (`/metrics`).
        #[arg(long, default_value = "127.0.0.1:0")]
        metrics: std::net::SocketAddr,
    },
    /// Write a consistent copy of the deployment history, also while the
    /// server runs (SQLite: `VACUUM INTO`; PostgreSQL with --store: `pg_dump`).
    #[command(
        after_help = "Examples:\n  hatoba backup\n  hatoba backup --to /backups/hatoba-$(date +%F).db --output json\n  hatoba backup --store postgres://hatoba@db:5432/hatoba --to hatoba.pgdump\n\n\
                            The copy is mode 0600 and never replaces an existing file. Exits 0 when written,\n\
                            1 when the copy failed (a damaged database, pg_dump missing), 2 when FILE exists\n\
                            or cannot be written, 4 when the state directory has no history."
    )]
    Backup(BackupArgs),
    /// Put a copy written by `hatoba backup` in place of the state
    /// directory's database, after checking it; the server must be stopped.
    #[command(
        after_help = "Example:\n  hatoba restore hatoba-backup-20261206T063000Z.db --state-dir /var/lib/hatoba\n\n\
                            The copy must pass SQLite's integrity check and hold a Hatoba history whose\n\
                            migrations this version knows. The database it replaces is kept beside it as\n\
                            hatoba.db.before-restore-TIME. Exits 0 when restored, 2 when FILE is missing or is\n\
                            not a sound Hatoba history, 5 while a server runs for the state directory,\n\
                            6 for PostgreSQL (--store; use pg_restore)."
    )]
    Restore(RestoreArgs),
    /// See the whole idea in a minute, with nothing to install.
    #[command(
        after_help = "Examples:\n  hatoba demo             local processes, nothing needed\n  hatoba demo --docker    the same phases with Docker containers\n\n\
                      Exits 0 when every expectation held, 1 when one did not. With --docker, the demo's\n\
                      image is built on the local Docker Engine from this binary (FROM scratch, no registry)\n\
                      and removed at the end with its containers; when no engine answers it says so and\n\
                      exits 1 before starting anything (DOCKER_HOST is honoured)."
    )]
    Demo {
        /// A shorter run.
        #[arg(long)]
        quick: bool,
        /// Run the instances as containers of the local Docker Engine.
        #[arg(long)]
        docker: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct FileArg {
    /// The spec file.
    #[arg(
        long,
        short = 'f',
        env = "HATOBA_FILE",
        default_value = "hatoba.yaml",
        value_name = "FILE"
    )]
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) file: FileArg,
    /// An environment this server runs (`development` needs no
    /// declaration); repeat it to run several side by side, or `all` for
    /// every environment the spec declares.
    #[arg(long, short = 'e', default_value = "development", value_name = "ENV")]
    pub(crate) env: Vec<String>,
    /// Leave instances and the data plane running when the server stops,
    /// for the next `hatoba up` to take over.
    #[arg(long)]
    pub(crate) keep_running: bool,
    /// Run the proxy inside this process instead of as its own process
    /// (then users' traffic stops when the server stops).
    #[arg(long)]
    pub(crate) in_process_proxy: bool,
    /// Serve the proxy's traffic metrics (Prometheus text, `/metrics`) on
    /// this address, for a Prometheus to scrape (default: a free loopback
    /// port, written in server.json).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Serve the API on this address (default: a free loopback port,
    /// written in server.json). The API is plain HTTP: another address
    /// lets others reach it, and its token and secrets travel in clear.
    #[arg(long, value_name = "ADDR")]
    pub(crate) api: Option<std::net::SocketAddr>,
    /// How the server's own log lines are written on stderr: `text` for a
    /// person, `json` (one object per line) for a log collector. Their
    /// level comes from `HATOBA_LOG` (`info` by default).
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub(crate) log_format: LogFormat,
}

/// `hatoba deploy --wait[=UNTIL]`: how far to follow a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum WaitUntil {
    /// Until the new version serves all traffic (what `--wait` alone means).
    Serving,
    /// Until the deployment ends: the previous version stopped, any watch over.
    Complete,
}

/// `hatoba up --log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for a person.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// Where to write the copy (default: `hatoba-backup-TIME.db` in the
    /// current directory, `.pgdump` for PostgreSQL).
    #[arg(long, value_name = "FILE")]
    pub(crate) to: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The copy, as `hatoba backup` wrote it.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Only this service.
    pub(crate) service: Option<String>,
    /// Only this environment.
    #[arg(long, short = 'e')]
    pub(crate) env: Option<String>,
    /// At most this many deployments.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub(crate) limit: u32,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Only this service.
    pub(crate) service: Option<String>,
    /// Only this environment.
    #[arg(long, short = 'e')]
    pub(crate) env: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Only this service's events.
    pub(crate) service: Option<String>,
    /// Only this environment's events.
    #[arg(long, short = 'e')]
    pub(crate) env: Option<String>,
    /// Only this deployment's events.
    #[arg(long, value_name = "ID")]
    pub(crate) deployment: Option<String>,
    /// Only the events after this id (an event's `id` in `-o json`);
    /// without it, the newest ones.
    #[arg(long, value_name = "ID")]
    pub(crate) after: Option<u64>,
    /// How many stored events to print at most (1 to 1000).
    #[arg(long, short = 'n', default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) lines: u32,
    /// Keep printing events as they happen (Ctrl-C stops).
    #[arg(long, short)]
    pub(crate) follow: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The service (one with `docker.build`).
    pub(crate) service: String,
    /// The version: `${VERSION}` in `docker.image` and the build arguments.
    #[arg(long)]
    pub(crate) version: String,
    #[command(flatten)]
    pub(crate) file: FileArg,
    /// The environment whose overrides and variables apply.
    #[arg(long, short = 'e', default_value = "development")]
    pub(crate) env: String,
    /// Values for other `${NAME}`s, as NAME=VALUE.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub(crate) set: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// The service.
    pub(crate) service: String,
    /// The version to deploy.
    #[arg(long)]
    pub(crate) version: String,
    /// The environment (one the server runs; needed when it runs several
    /// that have the service).
    #[arg(long, short = 'e')]
    pub(crate) env: Option<String>,
    /// Extra variables for `${NAME}` interpolation, as NAME=VALUE.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub(crate) set: Vec<String>,
    /// Wait for the deployment: `--wait` until the new version serves all
    /// traffic (the previous one may stay warm a while for an instant
    /// rollback), `--wait=complete` until the deployment ends.
    #[arg(
        long,
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "serving",
        value_name = "UNTIL"
    )]
    pub(crate) wait: Option<WaitUntil>,
    /// Who deploys, for the history and approvals (default: $USER, $LOGNAME, or the account name).
    #[arg(long = "as", value_name = "NAME")]
    pub(crate) actor: Option<String>,
}

/// `hatoba secret ...`. Values are read from stdin or a file, never from
/// the command line (which shell history and `ps` show).
#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Store a new version of a secret (the value on stdin, or --from-file);
    /// services get it at their next deployment.
    #[command(
        after_help = "Examples:\n  printf %s \"$PW\" | hatoba secret set DB_PASSWORD\n  hatoba secret set DB_PASSWORD --env production --from-file ./db-password\n\n\
                      One final newline of the value is dropped. Needs `hatoba up` (the server is the\n\
                      only writer of the store): exits 3 when none runs for the state directory."
    )]
    Set(SecretValueArgs),
    /// Store a new version and deploy the services that use it again (the
    /// same version, through their strategy).
    #[command(
        after_help = "Example:\n  hatoba secret rotate DB_PASSWORD --from-file ./new-password\n\n\
                      A service with a deployment in progress, or none yet, gets it at its next deployment."
    )]
    Rotate(SecretValueArgs),
    /// The environment's secrets: names, versions, dates and users (never values).
    List {
        /// The environment (one the server runs; needed when it runs several).
        #[arg(long, short = 'e')]
        env: Option<String>,
    },
    /// Remove every version of a secret (running instances keep theirs;
    /// a deployment or rollback that needs it then fails until it is set again).
    Rm {
        /// The secret.
        name: String,
        /// The environment (one the server runs; needed when it runs several).
        #[arg(long, short = 'e')]
        env: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SecretValueArgs {
    /// The secret (declared under `secrets:` in the spec).
    pub(crate) name: String,
    /// The environment (one the server runs; needed when it runs several).
    #[arg(long, short = 'e')]
    pub(crate) env: Option<String>,
    /// Read the value from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    pub(crate) from_file: Option<PathBuf>,
    /// Who stores it, for the audit log (default: $USER, $LOGNAME, or the account name).
    #[arg(long = "as", value_name = "NAME")]
    pub(crate) actor: Option<String>,
}
