//! One configuration loader for every service binary: defaults < a YAML file < the environment
//! (`XCAT3_*`) < flags.
//!
//! The file is named by `--config FILE` (or `XCAT3_CONFIG`), which every binary has through
//! [`ConfigFile`]. Its keys are the names of the command's own flags with `_` for `-`
//! (`metrics_listen: none`, `etcd_endpoints: [http://10.0.0.1:2379]`, `insecure: true`), so
//! whatever a flag can set, the file can, and `--help` documents both. A key that is no flag of
//! the command is refused, naming the key. The file's values are added to the command line as
//! flags for the settings neither the environment nor the real flags gave, and the command line
//! is parsed again: one set of rules, clap's, validates everything.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command, Parser};
use serde_yaml::Value;

/// `--config FILE`, global to the binary's subcommands.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigFile {
    /// YAML file of settings: this command's flags by name, `_` for `-` (`metrics_listen:
    /// none`). The environment and flags win over it.
    #[arg(
        long = "config",
        env = "XCAT3_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
}

/// Why a command line could not be parsed with its file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("{0:#}")]
    File(anyhow::Error),
}

/// Parses this process's command line with its configuration file; on error prints it and exits
/// (status 2, as clap does).
pub fn parse<T: Parser>() -> T {
    match parse_from(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(Error::Clap(e)) => e.exit(),
        Err(Error::File(e)) => {
            eprintln!("error: {e:#}");
            std::process::exit(2)
        }
    }
}

/// Parses `argv` (program name first) with the configuration file it names, if any.
pub fn parse_from<T: Parser>(argv: Vec<OsString>) -> Result<T, Error> {
    let mut command = T::command();
    command.build();
    let matches = command.clone().try_get_matches_from(&argv)?;
    // The file configures the innermost subcommand (`xcat3-server all-in-one`).
    let (mut command, mut matches) = (&command, &matches);
    while let Some((name, sub)) = matches.subcommand() {
        let Some(c) = command.find_subcommand(name) else {
            break;
        };
        (command, matches) = (c, sub);
    }
    let file = matches
        .try_get_one::<PathBuf>("config")
        .ok()
        .flatten()
        .cloned();
    let Some(file) = file else {
        return Ok(T::try_parse_from(argv)?);
    };
    let extra = flags_from_file(command, matches, &file).map_err(Error::File)?;
    let mut argv = argv;
    argv.extend(extra);
    Ok(T::try_parse_from(argv)?)
}

/// The flags that `file` adds to a command line parsed as `matches`.
fn flags_from_file(
    command: &Command,
    matches: &ArgMatches,
    file: &std::path::Path,
) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let settings: serde_yaml::Mapping = match serde_yaml::from_str::<Option<_>>(&text)
        .with_context(|| format!("parse {}", file.display()))?
    {
        Some(map) => map,
        None => serde_yaml::Mapping::new(),
    };
    let mut flags = Vec::new();
    for (key, value) in settings {
        let Some(key) = key.as_str() else {
            bail!("{}: the keys are flag names, not {key:?}", file.display());
        };
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == key && a.get_long().is_some() && key != "config")
            .with_context(|| {
                format!(
                    "{}: {key:?} is not a setting of this command (the keys are its flags' \
                     names with '_' for '-'; see --help)",
                    file.display()
                )
            })?;
        if matches!(
            matches.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue; // the environment and flags win
        }
        let long = arg.get_long().unwrap_or(key);
        let takes_value = arg.get_action().takes_values();
        let what = || format!("{}: {key}", file.display());
        match value {
            Value::Null => {}
            Value::Bool(on) if !takes_value => {
                if on {
                    flags.push(OsString::from(format!("--{long}")));
                }
            }
            _ if !takes_value => bail!("{}: is a switch, give true or false", what()),
            Value::Sequence(items) => {
                for item in items {
                    flags.push(OsString::from(format!(
                        "--{long}={}",
                        scalar(&item, &what)?
                    )));
                }
            }
            other => flags.push(OsString::from(format!(
                "--{long}={}",
                scalar(&other, &what)?
            ))),
        }
    }
    Ok(flags)
}

fn scalar(value: &Value, what: &dyn Fn() -> String) -> anyhow::Result<String> {
    Ok(match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => bail!("{}: give a string, number or boolean", what()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Service {
        #[command(flatten)]
        file: ConfigFile,
        #[command(subcommand)]
        role: Role,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Role {
        Run {
            #[arg(long, default_value = "127.0.0.1:1")]
            listen: String,
            #[arg(long)]
            metrics_listen: Option<String>,
            #[arg(long, value_delimiter = ',')]
            endpoints: Vec<String>,
            #[arg(long, default_value_t = 10)]
            limit: u32,
            #[arg(long)]
            insecure: bool,
        },
    }

    fn parse(file: &str, args: &[&str]) -> Result<Role, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["svc".into(), "--config".into(), path.into()];
        argv.extend(args.iter().map(OsString::from));
        parse_from::<Service>(argv).map(|s| s.role)
    }

    #[test]
    fn the_file_fills_what_flags_leave() {
        let file = "listen: 0.0.0.0:9\nmetrics_listen: none\nendpoints: [a, b]\nlimit: 7\ninsecure: true\n";
        let Role::Run {
            listen,
            metrics_listen,
            endpoints,
            limit,
            insecure,
        } = parse(file, &["run", "--limit", "3"]).unwrap();
        assert_eq!(listen, "0.0.0.0:9", "the file beats a default");
        assert_eq!(metrics_listen.as_deref(), Some("none"));
        assert_eq!(endpoints, ["a", "b"]);
        assert_eq!(limit, 3, "a flag beats the file");
        assert!(insecure);
        // An empty file changes nothing.
        let Role::Run { limit, .. } = parse("", &["run"]).unwrap();
        assert_eq!(limit, 10);
    }

    #[test]
    fn bad_files_name_the_key() {
        for (file, want) in [
            ("bogus: 1\n", "\"bogus\" is not a setting"),
            ("config: x.yaml\n", "\"config\" is not a setting"),
            ("insecure: yes please\n", "insecure: is a switch"),
            ("limit: {a: 1}\n", "limit: give a string"),
            ("limit: many\n", "invalid value 'many'"),
            ("[1, 2]\n", "parse"),
        ] {
            let err = parse(file, &["run"]).unwrap_err().to_string();
            assert!(err.contains(want), "{file:?}: {err}");
        }
    }
}
