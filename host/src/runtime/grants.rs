//! Deny by default: a component may import only the sandboxed WASI interfaces Rust std
//! needs and the capabilities its rule is granted. Checked once, at load.

use crate::config::Capability;
use crate::error::LoadError;

use crate::runtime::contract::VERSIONS;

pub(crate) const CONTRACT_PACKAGE: &str = "portcullis:rule";

/// WASI interfaces a rule may import. They are linked with an empty context: no
/// files, no environment, no network; time and randomness derived from the login.
const SANDBOXED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// One import of a component, as `check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub name: String,
    /// The capability it needs, for `portcullis:rule` interfaces other than `types`.
    pub capability: Option<Capability>,
}

/// Classifies a component's imports against its rule's grants.
pub(crate) fn check_imports<'a>(
    rule: &str,
    grants: &[Capability],
    imports: impl Iterator<Item = &'a str>,
) -> Result<Vec<Import>, LoadError> {
    let mut checked: Vec<Import> = Vec::new();
    let mut contract: Option<&str> = None;
    for name in imports {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        let unsupported = || LoadError::Unsupported {
            rule: rule.to_owned(),
            import: name.to_owned(),
        };
        let capability = if let Some(local) = interface
            .strip_prefix(CONTRACT_PACKAGE)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            if !VERSIONS.contains(&version) {
                return Err(LoadError::Contract {
                    rule: rule.to_owned(),
                    message: format!(
                        "it imports `{name}`, but this host provides {CONTRACT_PACKAGE} {}",
                        VERSIONS.join(" and ")
                    ),
                });
            }
            // One rule, one contract: its types would not line up otherwise.
            match contract {
                Some(seen) if seen != version => {
                    return Err(LoadError::Contract {
                        rule: rule.to_owned(),
                        message: format!(
                            "it imports {CONTRACT_PACKAGE} both @{seen} and @{version}"
                        ),
                    });
                }
                _ => contract = Some(version),
            }
            if local == "types" {
                None
            } else {
                let capability = Capability::ALL
                    .into_iter()
                    .find(|c| c.interface() == local)
                    .ok_or_else(unsupported)?;
                if !grants.contains(&capability) {
                    return Err(LoadError::Ungranted {
                        rule: rule.to_owned(),
                        interface: capability.interface().to_owned(),
                    });
                }
                Some(capability)
            }
        } else if version.starts_with("0.2.") && SANDBOXED_WASI.contains(&interface) {
            None
        } else {
            return Err(unsupported());
        };
        checked.push(Import {
            name: name.to_owned(),
            capability,
        });
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ungranted_capability_is_refused_with_rule_and_interface() {
        let err = check_imports(
            "r1",
            &[Capability::Log],
            ["portcullis:rule/log@0.1.0", "portcullis:rule/legacy@0.1.0"].into_iter(),
        )
        .unwrap_err();
        assert!(
            matches!(err, LoadError::Ungranted { ref rule, ref interface } if rule == "r1" && interface == "legacy")
        );
    }

    #[test]
    fn sockets_and_other_versions_are_refused() {
        let refused =
            |name: &str| check_imports("r", &Capability::ALL, std::iter::once(name)).is_err();
        assert!(refused("wasi:sockets/tcp@0.2.3"));
        assert!(refused("wasi:http/outgoing-handler@0.2.0"));
        assert!(refused("wasi:filesystem/preopens@0.2.6"));
        assert!(refused("portcullis:rule/log@0.3.0"));
        assert!(!refused("wasi:cli/stderr@0.2.3"));
        assert!(!refused("portcullis:rule/types@0.1.0"));
        assert!(!refused("portcullis:rule/mfa@0.2.0"));
    }

    #[test]
    fn one_rule_imports_one_contract_version() {
        let err = check_imports(
            "r",
            &Capability::ALL,
            ["portcullis:rule/types@0.1.0", "portcullis:rule/mfa@0.2.0"].into_iter(),
        )
        .unwrap_err();
        assert!(matches!(err, LoadError::Contract { .. }), "{err}");
    }
}
