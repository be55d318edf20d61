//! Configuration parsing shape shared by the binaries: a clap `Parser` read from arguments and
//! an environment lookup, so tests hand in a map and never touch the process environment.
//!
//! An invalid setting becomes [`ConfigError::Invalid`], one line naming the environment
//! variable (and flag); [`or_exit`] prints it to stderr and exits with [`EXIT_CONFIG`] before
//! anything is bound. `--help`/`--version` become [`ConfigError::Display`] (printed, exit 0).

use std::error::Error as _;
use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Command, Parser};

/// Exit status for invalid configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Why the configuration was rejected, or that help/version was asked for.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting is missing or has an invalid value; the message is one line naming it.
    #[error("{0}")]
    Invalid(String),
    /// `--help` or `--version`: print the text and exit 0.
    #[error("{0}")]
    Display(String),
}

/// Parses the process arguments and environment into `C`.
pub fn from_process<C: Parser>() -> Result<C, ConfigError> {
    let process_env = |name: &str| std::env::var(name).ok();
    parse_from(std::env::args_os(), &process_env)
}

/// Parses `args` (the first is the program name) with `env` standing in for the process
/// environment: every variable `env` knows becomes its flag, unless the flag is given.
pub fn parse_from<C, I, T>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<C, ConfigError>
where
    C: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut argv: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // Resolve variables here, through `env`, never through clap's own process lookup.
    let mut command = C::command();
    let given: Vec<String> = argv
        .iter()
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_owned())
        .collect();
    let mut from_env = Vec::new();
    for arg in command.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some(var) = var.to_str() else { continue };
        if given.iter().any(|g| g == long) {
            continue;
        }
        if let Some(value) = env(var) {
            from_env.push(OsString::from(format!("--{long}={value}")));
        }
    }
    argv.extend(from_env);
    let ids: Vec<_> = command
        .get_arguments()
        .filter(|a| a.get_env().is_some())
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |a| a.env(None::<&str>));
    }
    let described = C::command();
    let matches = match command.try_get_matches_from(argv.iter().cloned()) {
        Ok(matches) => matches,
        Err(error) if is_display(&error) => {
            // Render help/version from the command that still lists its variables.
            let error = described
                .clone()
                .try_get_matches_from(argv)
                .err()
                .unwrap_or(error);
            return Err(describe(&described, &error));
        }
        Err(error) => return Err(describe(&described, &error)),
    };
    C::from_arg_matches(&matches).map_err(|e| describe(&described, &e))
}

fn is_display(error: &clap::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// Prints `--help`/`--version` and exits 0, or prints the one-line error as
/// `program: line` to stderr and exits [`EXIT_CONFIG`]; otherwise returns the value.
pub fn or_exit<C>(program: &str, parsed: Result<C, ConfigError>) -> C {
    match parsed {
        Ok(config) => config,
        Err(ConfigError::Display(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(ConfigError::Invalid(line)) => exit_invalid(program, &line),
    }
}

/// Prints `program: line` to stderr and exits [`EXIT_CONFIG`].
pub fn exit_invalid(program: &str, line: &str) -> ! {
    eprintln!("{program}: {line}");
    std::process::exit(EXIT_CONFIG)
}

/// Turns a clap error into one line naming the offending variable (and flag), using
/// `command` (with its `env` attributes) to find the variable of a flag.
pub fn describe(command: &Command, error: &clap::Error) -> ConfigError {
    if is_display(error) {
        return ConfigError::Display(error.render().to_string());
    }
    let name_of = |flag: &str| -> String { setting_name(command, flag) };
    let reason = error
        .get(ContextKind::Custom)
        .map(ToString::to_string)
        .or_else(|| error.source().map(ToString::to_string));
    let line = match (error.kind(), error.get(ContextKind::InvalidArg)) {
        (ErrorKind::MissingRequiredArgument, Some(ContextValue::Strings(flags))) => {
            let names: Vec<String> = flags.iter().map(|f| name_of(f)).collect();
            format!("missing required setting {}", names.join(", "))
        }
        (_, Some(ContextValue::String(flag))) => {
            let value = match error.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => format!(" {v:?}"),
                _ => String::new(),
            };
            let reason = reason
                .or_else(|| first_line(error))
                .map(|r| format!(": {r}"));
            format!(
                "invalid {}{value}{}",
                name_of(flag),
                reason.unwrap_or_default()
            )
        }
        _ => first_line(error).unwrap_or_else(|| "invalid configuration".to_owned()),
    };
    ConfigError::Invalid(line)
}

/// `VAR (--flag)` for clap's rendering of an argument (`--flag <FLAG>`), or `--flag`.
pub fn setting_name(command: &Command, rendered: &str) -> String {
    let long = rendered
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or(rendered);
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .and_then(|e| e.to_str())
        .map_or_else(|| format!("--{long}"), |var| format!("{var} (--{long})"))
}

fn first_line(error: &clap::Error) -> Option<String> {
    let rendered = error.render().to_string();
    rendered
        .lines()
        .next()
        .map(|l| l.trim_start_matches("error: ").to_owned())
}

/// A boolean as Go's `strconv.ParseBool` reads it (for `value_parser`).
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("invalid boolean {other:?} (use true or false)")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Parser, Debug)]
    #[command(name = "demo", version)]
    struct Demo {
        /// A required port.
        #[arg(long, env = "DEMO_PORT")]
        port: u16,
        /// A flag with a default.
        #[arg(long, env = "DEMO_ENABLED", default_value = "false", value_parser = go_bool, action = clap::ArgAction::Set)]
        enabled: bool,
        /// No variable.
        #[arg(long, default_value = "x")]
        name: String,
    }

    fn parse(args: &[&str], vars: &[(&str, &str)]) -> Result<Demo, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let argv = std::iter::once("demo").chain(args.iter().copied());
        parse_from(argv, &|k| map.get(k).cloned())
    }

    #[test]
    fn variables_from_the_lookup_become_settings() {
        let d = parse(&[], &[("DEMO_PORT", "8080"), ("DEMO_ENABLED", "T")]).expect("valid");
        assert_eq!(d.port, 8080);
        assert!(d.enabled);
        assert_eq!(d.name, "x");
    }

    #[test]
    fn flags_win_over_variables() {
        let d = parse(&["--port=1"], &[("DEMO_PORT", "8080")]).expect("valid");
        assert_eq!(d.port, 1);
    }

    #[test]
    fn missing_setting_is_one_line_naming_the_variable() {
        let err = parse(&[], &[]).expect_err("missing");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Invalid(_)));
        assert!(msg.contains("DEMO_PORT (--port)"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn invalid_value_names_variable_and_value() {
        let err = parse(&[], &[("DEMO_PORT", "eighty")]).expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("DEMO_PORT"), "{msg}");
        assert!(msg.contains("\"eighty\""), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let err = parse(&["--enabled=yes"], &[("DEMO_PORT", "1")]).expect_err("invalid");
        assert!(err.to_string().contains("DEMO_ENABLED"), "{err}");
    }

    #[test]
    fn help_is_display_and_lists_variables() {
        let Err(ConfigError::Display(text)) = parse(&["--help"], &[]) else {
            panic!("help expected");
        };
        assert!(text.contains("DEMO_PORT"), "{text}");
    }

    #[test]
    fn the_real_environment_is_not_read() {
        // PATH is always set in the process environment; a lookup that knows nothing must
        // not see it even for a flag bound to it.
        #[derive(Parser, Debug)]
        struct PathOnly {
            #[arg(long, env = "PATH")]
            path: Option<String>,
        }
        let p: PathOnly = parse_from(["x"], &|_| None).expect("valid");
        assert_eq!(p.path, None);
    }

    #[test]
    fn go_booleans() {
        assert_eq!(go_bool("1"), Ok(true));
        assert_eq!(go_bool("False"), Ok(false));
        assert!(go_bool("yes").is_err());
    }
}
