//! Where an option's value comes from: a flag, else its `REPLICA_RELAY_*` environment variable
//! (both read by clap, from the arguments this module makes of the options table), else the
//! `--config` TOML file, else the table's default. Every value arrives as the text a person
//! wrote and is parsed once, by its type's `Setting::parse`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches};

use super::value::Setting;

/// One option of the table: everything about it but its Rust type, which `Config` holds.
pub struct Opt {
    /// The flag (`--repl-timeout`) and the TOML key (`repl-timeout`).
    pub name: &'static str,
    pub env: &'static str,
    /// The value used when nothing sets it, as a person would write it; "" for unset.
    pub default: &'static str,
    pub help: &'static str,
    pub choices: &'static [&'static str],
    /// Parses a value as its type does, so a bad flag fails before anything runs.
    pub check: fn(&str) -> Result<()>,
    pub shape: Shape,
}

/// How an option is written on the command line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    One,
    /// A password: its environment value is never printed.
    Secret,
    /// `--replicaof HOST PORT` (or `--slaveof`), one value "HOST PORT" elsewhere.
    HostPort,
    /// Repeatable, or comma-separated; a TOML array.
    List,
}

/// Where a value came from, named in the error when it does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Flag,
    Env(&'static str),
    File(PathBuf),
}

/// The values given to the relay, before parsing.
#[derive(Debug, Default)]
pub struct Given {
    pub config_file: Option<PathBuf>,
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl Given {
    /// For tests: values as if given as flags.
    #[cfg(test)]
    pub fn flags(pairs: &[(&'static str, &str)]) -> Given {
        let values = pairs
            .iter()
            .map(|(k, v)| (*k, (v.to_string(), Origin::Flag)));
        Given {
            config_file: None,
            values: values.collect(),
        }
    }
}

/// The clap argument of an option.
pub fn arg(opt: &'static Opt) -> Arg {
    let help: Vec<&str> = opt.help.split_whitespace().collect();
    let mut arg = Arg::new(opt.name)
        .long(opt.name)
        .env(opt.env)
        .help(help.join(" "))
        .required(false);
    if !opt.default.is_empty() {
        arg = arg.default_value(opt.default);
    }
    match opt.shape {
        Shape::One | Shape::Secret => {
            let check = opt.check;
            arg = arg
                .action(ArgAction::Set)
                .hide_env_values(opt.shape == Shape::Secret)
                .value_parser(move |s: &str| check(s).map(|()| s.to_string()));
            if !opt.choices.is_empty() {
                arg = arg.value_parser(clap::builder::PossibleValuesParser::new(opt.choices));
            }
        }
        Shape::HostPort => {
            arg = arg
                .alias("slaveof")
                .num_args(2)
                .value_names(["HOST", "PORT"])
                .value_delimiter(' ')
        }
        Shape::List => arg = arg.action(ArgAction::Append).value_delimiter(','),
    }
    arg
}

/// The `--config` argument.
pub fn config_arg() -> Arg {
    Arg::new("config")
        .long("config")
        .env("REPLICA_RELAY_CONFIG")
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help("TOML config file (see config/relay.toml); flags and environment override it.")
}

/// What the flags and the environment gave, options left at their defaults omitted.
pub fn from_matches(m: &ArgMatches, table: &'static [Opt]) -> Given {
    let mut values = BTreeMap::new();
    for opt in table {
        let origin = match m.value_source(opt.name) {
            Some(ValueSource::CommandLine) => Origin::Flag,
            Some(ValueSource::EnvVariable) => Origin::Env(opt.env),
            _ => continue,
        };
        let Some(words) = m.get_many::<String>(opt.name) else {
            continue;
        };
        let words: Vec<&str> = words.map(String::as_str).collect();
        let joined = words.join(if opt.shape == Shape::List { "," } else { " " });
        values.insert(opt.name, (joined, origin));
    }
    Given {
        config_file: m.get_one::<PathBuf>("config").cloned(),
        values,
    }
}

/// The given values with the `--config` file's under them.
pub fn with_file(mut given: Given, table: &'static [Opt]) -> Result<Given> {
    let Some(path) = given.config_file.clone() else {
        return Ok(given);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let file: toml::Table =
        toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))?;
    for (key, value) in file {
        let Some(opt) = table.iter().find(|o| o.name == key) else {
            let names: Vec<&str> = table.iter().map(|o| o.name).collect();
            bail!(
                "in config file {}: unknown field `{key}`, expected one of {}",
                path.display(),
                names.join(", ")
            );
        };
        let text = toml_text(&value)
            .with_context(|| format!("in config file {}: {key}", path.display()))?;
        let origin = Origin::File(path.clone());
        given.values.entry(opt.name).or_insert((text, origin));
    }
    Ok(given)
}

/// A TOML value as the text a flag would carry.
fn toml_text(value: &toml::Value) -> Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => b.show(),
        toml::Value::Array(items) => {
            let texts = items.iter().map(toml_text).collect::<Result<Vec<_>>>()?;
            texts.join(",")
        }
        other => bail!("expected a string, a number, yes/no or a list, got {other}"),
    })
}

impl Given {
    /// The option's value: given, or its default; parsed by its type.
    pub fn parse<T: Setting>(&self, name: &'static str, default: &str) -> Result<T> {
        let Some((text, origin)) = self.values.get(name) else {
            return T::parse(default).with_context(|| format!("the default of {name}"));
        };
        T::parse(text).with_context(|| match origin {
            Origin::Flag => format!("--{name}"),
            Origin::Env(var) => format!("{name} (environment {var})"),
            Origin::File(path) => format!("{name} (config file {})", path.display()),
        })
    }
}
