//! The command tree. Node commands take a noderange (`node[01-10]`, `rack1,-n5`, `/^cn.*/`, ...).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "xcat3",
    version,
    about = "xcat3 bare-metal provisioning client"
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the api is and how to authenticate: flag, else environment, else
/// `~/.config/xcat3/config.yaml` (`url:` and `token:`), else `http://127.0.0.1:3010`.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Api address, such as http://10.0.0.1:3010.
    #[arg(long, global = true, env = "XCAT3_URL")]
    pub url: Option<String>,
    /// Bearer token.
    #[arg(long, global = true, env = "XCAT3_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate(s) an https:// api must present a certificate from.
    #[arg(long, global = true, env = "XCAT3_CA")]
    pub ca: Option<PathBuf>,
    /// The name the api's certificate must carry, when the URL's host is not in it (a
    /// port-forward to 127.0.0.1) [default: the URL's host].
    #[arg(long, global = true, env = "XCAT3_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Client configuration file [default: ~/.config/xcat3/config.yaml].
    #[arg(long, global = true, env = "XCAT3_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

impl Format {
    /// Showing one record reads better as YAML than as a one-row table.
    pub fn for_one(self) -> Format {
        if self == Format::Table {
            Format::Yaml
        } else {
            self
        }
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create nodes: `create NODERANGE [mgt=.. netboot=.. arch=.. groups=.. osimage=.. labels/K=V]
    /// [--control k=v,...] [--nic mac=..,ip=..,name=..,primary=True]...`, or `create -f nodes.yaml`.
    Create(CreateArgs),
    /// Create the nodes of a file written by `export` (same as `create -f`).
    Import(ImportArgs),
    /// Change attributes: `update NODERANGE path=value ...` (an empty value removes).
    Update(UpdateArgs),
    /// Delete nodes.
    Delete(DeleteArgs),
    /// List nodes (all when no noderange).
    List(ListArgs),
    /// Show nodes in full (secrets shown as ******).
    Show(ShowArgs),
    /// Write nodes to a YAML file that `import` reads back (`--with-secrets` for a lossless
    /// backup).
    Export(ExportArgs),
    /// Define a network: `network-create NAME subnet=.. netmask=.. [gateway=..] [dynamic_range=A-B]
    /// [nameservers=a,b] [domain=..] [mtu=..]`.
    NetworkCreate(NetworkCreateArgs),
    /// Change a network: `network-update NAME key=value ...`.
    NetworkUpdate(NetworkCreateArgs),
    NetworkDelete(NameArg),
    NetworkList(OutputArgs),
    NetworkShow(NameOutputArgs),
    /// Machines that asked the network agents for an address and are not nodes yet
    /// (`xcat3 create NAME mac=...` adopts one).
    DiscoveredList(OutputArgs),
    OsimageList(OutputArgs),
    OsimageShow(NameOutputArgs),
    /// Delete an OS image no node uses (its install tree goes with it).
    OsimageDelete(NameArg),
    /// Store a named credential: `passwd-create KEY [username=..] [password=..] [crypt_method=sha512|sha256]`;
    /// without password=, it is read from standard input.
    PasswdCreate(PasswdCreateArgs),
    PasswdList(OutputArgs),
    PasswdDelete(NameArg),
    /// List the running xcat3 services.
    ServiceList(OutputArgs),
    /// Power control: `power NODERANGE on|off|reset|cycle|status|boot`.
    Power(PowerArgs),
    /// Next boot device: `bootdev NODERANGE net|disk|cdrom|status`.
    Bootdev(BootdevArgs),
    /// List the conductors and the shards they own.
    ConductorList(OutputArgs),
    /// Show the event history of nodes.
    Events(EventsArgs),
    /// Install an OS image: `deploy NODERANGE [--osimage NAME] [--reboot]`; each node ends in
    /// wait-callback (installing) or with the reason it cannot be deployed. `deploy -d` undeploys.
    Deploy(DeployArgs),
    /// Cancel or forget a deploy: the nodes become available and boot from their disks.
    Undeploy(NoderangeArg),
}

#[derive(Args, Debug)]
pub struct NoderangeArg {
    pub noderange: String,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    pub noderange: String,
    /// The OS image [default: each node's osimage attribute].
    #[arg(long)]
    pub osimage: Option<String>,
    /// Set net boot and power-cycle the nodes once their boot configuration is published.
    #[arg(long)]
    pub reboot: bool,
    /// Minutes to wait for the installed system's callback [default: the server's, 60].
    #[arg(long)]
    pub timeout: Option<u32>,
    /// OpenSSH public key file for root's authorized_keys (repeatable).
    #[arg(long = "ssh-key")]
    pub ssh_keys: Vec<PathBuf>,
    /// Undeploy instead (the prototype's `deploy -d`).
    #[arg(short = 'd', long = "delete")]
    pub delete: bool,
}

#[derive(Args, Debug)]
pub struct PowerArgs {
    pub noderange: String,
    #[arg(value_parser = ["on", "off", "reset", "cycle", "status", "boot"])]
    pub action: String,
    /// Return once the conductors have accepted the work; follow it with `xcat3 events`.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct BootdevArgs {
    pub noderange: String,
    #[arg(value_parser = ["net", "disk", "cdrom", "status"])]
    pub device: String,
    /// Return once the conductors have accepted the work.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    pub noderange: String,
    /// Most recent events per node.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug, Clone, Default)]
pub struct BulkArgs {
    /// Fail the whole request, writing nothing, if any node fails.
    #[arg(long)]
    pub all_or_nothing: bool,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Noderange of the new nodes, then attributes (key=value).
    #[arg(value_name = "NODERANGE [ATTR=VALUE]...")]
    pub args: Vec<String>,
    /// Control parameters, comma-separated: ssh_address=..,ssh_username=..,bmc_address=..,...
    #[arg(short = 'c', long)]
    pub control: Option<String>,
    /// A NIC: mac=..,ip=..,name=..,primary=True (repeatable).
    #[arg(short = 'i', long = "nic")]
    pub nics: Vec<String>,
    /// YAML (or JSON) file of nodes, as written by `export`.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub bulk: BulkArgs,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub bulk: BulkArgs,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    pub noderange: String,
    /// path=value (arch=aarch64, control/bmc_password=x, labels/rack=3, nics/eth0/ip=10.0.0.5).
    #[arg(required = true)]
    pub changes: Vec<String>,
    #[command(flatten)]
    pub bulk: BulkArgs,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub noderange: String,
    #[command(flatten)]
    pub bulk: BulkArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    pub noderange: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    pub noderange: String,
    /// Output format [default: yaml].
    #[arg(short = 'o', long = "output", value_enum)]
    pub format: Option<Format>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    pub noderange: String,
    /// File to write (YAML), readable by its owner only.
    #[arg(short = 'o', long = "output")]
    pub file: PathBuf,
    /// Write the secrets (BMC passwords, Kg keys) in clear, so that `import` restores them: a
    /// backup. Needs the admin token; without it secrets are written as ******, which import
    /// refuses.
    #[arg(long)]
    pub with_secrets: bool,
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    pub name: String,
    /// key=value pairs.
    pub attrs: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NameArg {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NameOutputArgs {
    pub name: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct PasswdCreateArgs {
    pub key: String,
    /// username=.., password=.., crypt_method=..
    pub attrs: Vec<String>,
}
