//! Layered configuration: one TOML file, overridden by `PREFIX__SECTION__KEY`
//! environment variables, defaults in the type's `Default`. Every VSS
//! Demiurge process loads its configuration this way (hubd with `HUBD__`, the
//! control plane with `CP__`).
//!
//! Every error names where the bad value came from (file and line, or
//! environment variable), the field, the value, and why, on one line.
//! Environment values are typed by the default's type, so `HUBD__HUB__NAME=1234`
//! stays a string and `HUBD__STORE__BATCH_MAX=abc` is a precise error; array
//! sections (`[[slots]]`) cannot be set from the environment.
//!
//! This module never reads files: callers read the text and pass it in.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// Why a configuration could not be loaded. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value in it has the wrong shape.
    #[error("{path}:{line}: {field}{message}")]
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the bad value.
        line: usize,
        /// `field `a.b` = value: ` or empty when no field applies (syntax errors).
        field: String,
        /// Why.
        message: String,
    },
    /// An environment override is unknown or has the wrong shape.
    #[error("environment {var}: {message}")]
    Env {
        /// The variable, e.g. `HUBD__API__LISTEN`.
        var: String,
        /// Why.
        message: String,
    },
    /// Values that parse but do not make sense together.
    #[error("{origin}: field `{field}` = {value}: {why}")]
    Invalid {
        /// The file, or "defaults" for a config built in code.
        origin: String,
        /// Path of the field, e.g. `slots[2].sip_number`.
        field: String,
        /// The offending value as written.
        value: String,
        /// Why it is rejected.
        why: String,
    },
}

/// Parses `text` (named `origin` in errors), applies the `prefix`ed
/// overrides among `vars`, then runs `validate` on the result (its errors are
/// re-attributed to the variable that set the field, if one did).
pub fn load<T: Serialize + DeserializeOwned + Default>(
    text: &str,
    origin: &Path,
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
    validate: impl FnOnce(&T, &str) -> Result<(), ConfigError>,
) -> Result<T, ConfigError> {
    // First pass on the text itself, so errors point at a line.
    let from_file: T = parse_file(text, origin)?;
    let overrides = overrides(prefix, vars);
    let config = if overrides.is_empty() {
        from_file
    } else {
        apply(text, prefix, &overrides)?
    };
    validate(&config, &origin.display().to_string()).map_err(|e| blame(e, &overrides))?;
    Ok(config)
}

/// The process's variables that start with `prefix`. Other variables are
/// never read, so an unrelated variable that is not UTF-8 cannot stop a
/// process; a prefixed one is a clear error.
pub fn prefixed_env(prefix: &str) -> Result<Vec<(String, String)>, ConfigError> {
    use std::os::unix::ffi::OsStrExt;
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        if !name.as_bytes().starts_with(prefix.as_bytes()) {
            continue;
        }
        let var = name.to_string_lossy().into_owned();
        let (Some(name), Ok(value)) = (name.to_str(), value.into_string()) else {
            return Err(ConfigError::Env {
                var,
                message: "not valid UTF-8".into(),
            });
        };
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}

/// One prefixed variable, split into its path.
#[derive(Debug)]
struct Override {
    var: String,
    path: Vec<String>,
    value: String,
}

/// The `prefix`ed variables among `vars`, in a stable order.
fn overrides(prefix: &str, vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut found: Vec<Override> = vars
        .into_iter()
        .filter_map(|(var, value)| {
            let rest = var.strip_prefix(prefix)?;
            let path = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            Some(Override { var, path, value })
        })
        .collect();
    found.sort_by(|a, b| a.var.cmp(&b.var));
    found
}

/// Applies `overrides` on top of the file `text` (already known to be valid).
fn apply<T: Serialize + DeserializeOwned + Default>(
    text: &str,
    prefix: &str,
    overrides: &[Override],
) -> Result<T, ConfigError> {
    let mut table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Env {
            var: "(config file)".into(),
            message: e.message().to_owned(),
        })?;
    let defaults = Table::try_from(T::default()).map_err(|e| ConfigError::Env {
        var: "(defaults)".into(),
        message: e.to_string(),
    })?;
    for o in overrides {
        let err = |message: String| ConfigError::Env {
            var: o.var.clone(),
            message,
        };
        let [section, key] = o.path.as_slice() else {
            return Err(err(format!(
                "expected {prefix}SECTION__KEY, e.g. {prefix}API__LISTEN"
            )));
        };
        if let Some(Value::Array(_)) = defaults.get(section) {
            return Err(err(format!(
                "[[{section}]] cannot be set from the environment; put {section} in the config file"
            )));
        }
        let Some(Value::Table(section_defaults)) = defaults.get(section) else {
            let known: Vec<&str> = defaults
                .iter()
                .filter(|(_, v)| v.is_table())
                .map(|(k, _)| k.as_str())
                .collect();
            return Err(err(format!(
                "unknown section `{section}` (known: {})",
                known.join(", ")
            )));
        };
        let Some(default) = section_defaults.get(key) else {
            let known: Vec<&str> = section_defaults.keys().map(String::as_str).collect();
            return Err(err(format!(
                "unknown setting `{section}.{key}` (known in [{section}]: {})",
                known.join(", ")
            )));
        };
        let value = typed(&o.value, default)
            .map_err(|why| err(format!("`{section}.{key}` = {:?}: {why}", o.value)))?;
        let target = table
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(target) = target else {
            return Err(err(format!(
                "`{section}` in the config file is not a section"
            )));
        };
        target.insert(key.clone(), value);
    }
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let culprit = overrides.iter().find(|o| o.path.join(".") == path);
        let var = culprit
            .map(|o| o.var.clone())
            .unwrap_or_else(|| format!("{prefix}{}", path.replace('.', "__").to_uppercase()));
        let value = culprit
            .map(|o| format!(" = {:?}", o.value))
            .unwrap_or_default();
        ConfigError::Env {
            var,
            message: format!("`{path}`{value}: {}", e.into_inner().message().trim()),
        }
    })
}

/// Re-attributes a validation error to the environment variable that set
/// the offending field, if one did.
fn blame(error: ConfigError, overrides: &[Override]) -> ConfigError {
    let ConfigError::Invalid {
        field,
        value,
        why,
        origin,
    } = error
    else {
        return error;
    };
    match overrides.iter().find(|o| o.path.join(".") == field) {
        Some(o) => ConfigError::Env {
            var: o.var.clone(),
            message: format!("`{field}` = {value}: {why}"),
        },
        None => ConfigError::Invalid {
            origin,
            field,
            value,
            why,
        },
    }
}

/// `raw` as a TOML value of the same type as `default`.
fn typed(raw: &str, default: &Value) -> Result<Value, String> {
    match default {
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| "expected an integer".to_owned()),
        Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| "expected a number".to_owned()),
        Value::Boolean(_) => match raw.trim() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err("expected true or false".to_owned()),
        },
        other => Err(format!(
            "a {} cannot be set from the environment",
            other.type_str()
        )),
    }
}

fn parse_file<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    let file_error = |err: toml::de::Error, field: String| {
        let line = err
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        ConfigError::File {
            path: origin.to_owned(),
            line,
            field,
            message: err.message().trim().replace('\n', " "),
        }
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| file_error(e, String::new()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let value = inner
            .span()
            .and_then(|span| text.get(span))
            .map(|v| v.lines().next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        // For an unknown field the span is the key itself, not a value.
        let value = if inner.message().starts_with("unknown field") {
            String::new()
        } else {
            value
        };
        let field = match (path.as_str(), value.is_empty()) {
            (".", _) | ("", _) => String::new(),
            (_, true) => format!("field `{path}`: "),
            (_, false) => format!("field `{path}` = {value}: "),
        };
        file_error(inner, field)
    })
}
