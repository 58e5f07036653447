//! Phone numbers as the SMS factor needs them: parsed and validated with the
//! `phonenumber` crate (libphonenumber's metadata), normalized to E.164, and only from
//! the calling codes the config allows (default: +1, North America). A number lives in
//! a [`Phone`], which zeroizes it when dropped and never prints it; errors never carry
//! it either.

use std::fmt;

use zeroize::Zeroizing;

/// Longer input is refused before parsing: no phone number needs more.
const MAX_INPUT_LEN: usize = 64;

/// Which numbers are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonePolicy {
    /// Country calling codes numbers may have (1 = the North American Numbering Plan).
    pub allowed_calling_codes: Vec<u16>,
}

impl Default for PhonePolicy {
    fn default() -> Self {
        Self {
            allowed_calling_codes: vec![1],
        }
    }
}

/// Why a number was refused: a reason to show the user, never the number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the phone number is empty or longer than {MAX_INPUT_LEN} characters")]
    Length,
    #[error("the phone number cannot be read as a phone number")]
    Unparseable,
    #[error("the phone number is not a valid number")]
    Invalid,
    #[error("phone numbers with calling code +{code} are not accepted here (allowed: {allowed})")]
    RegionNotAllowed { code: u16, allowed: String },
    /// Premium rate, shared cost, toll free and the like: texting them costs money or
    /// reaches no person, which is how SMS pumping pays.
    #[error("{0} numbers cannot receive second-factor codes; use a mobile number")]
    Kind(&'static str),
    #[error("only numbers of {0} can be enrolled here")]
    RegionOutside(String),
}

/// A validated number in E.164 (`+15551234567`).
pub struct Phone(Zeroizing<String>);

impl Phone {
    pub fn e164(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(<redacted>)")
    }
}

impl PhonePolicy {
    /// Parses what a user typed or a provider returned. Without a leading `+`, the
    /// number is read as one of the first allowed calling code's (national format).
    pub fn normalize(&self, input: &str) -> Result<Phone, PhoneError> {
        let input = Zeroizing::new(input.trim().to_owned());
        if input.is_empty() || input.len() > MAX_INPUT_LEN {
            return Err(PhoneError::Length);
        }
        let default_region = match self.allowed_calling_codes.first() {
            Some(1) => Some(phonenumber::country::Id::US),
            _ => None,
        };
        let number = phonenumber::parse(default_region, input.as_str())
            .map_err(|_| PhoneError::Unparseable)?;
        let code = number.code().value();
        if !self.allowed_calling_codes.contains(&code) {
            return Err(PhoneError::RegionNotAllowed {
                code,
                allowed: self
                    .allowed_calling_codes
                    .iter()
                    .map(|c| format!("+{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if !phonenumber::is_valid(&number) {
            return Err(PhoneError::Invalid);
        }
        Ok(Phone(Zeroizing::new(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        )))
    }
}

/// Whether a number can be a new second factor: in one of `regions` (CLDR ids such
/// as `US`; empty: any region of the allowed calling codes — +1 alone spans two dozen
/// countries, a favourite of SMS pumping), and a mobile number (or, where the plan
/// cannot tell, a fixed line or mobile one). Everything else is refused by name.
pub fn check_can_receive_codes(phone: &Phone, regions: &[String]) -> Result<(), PhoneError> {
    use phonenumber::Type;
    let number = phonenumber::parse(None, phone.e164()).map_err(|_| PhoneError::Unparseable)?;
    if !regions.is_empty() {
        let region = number.country().id();
        if !region.is_some_and(|id| regions.iter().any(|r| r.eq_ignore_ascii_case(id.as_ref()))) {
            return Err(PhoneError::RegionOutside(regions.join(", ")));
        }
    }
    match number.number_type(&phonenumber::metadata::DATABASE) {
        Type::Mobile | Type::FixedLineOrMobile => Ok(()),
        Type::PremiumRate => Err(PhoneError::Kind("premium-rate")),
        Type::SharedCost => Err(PhoneError::Kind("shared-cost")),
        Type::TollFree => Err(PhoneError::Kind("toll-free")),
        Type::Voip => Err(PhoneError::Kind("VoIP")),
        Type::PersonalNumber => Err(PhoneError::Kind("personal-number")),
        Type::Pager => Err(PhoneError::Kind("pager")),
        Type::Uan => Err(PhoneError::Kind("universal access")),
        Type::Voicemail => Err(PhoneError::Kind("voicemail")),
        Type::FixedLine => Err(PhoneError::Kind("fixed-line")),
        _ => Err(PhoneError::Kind("unclassified")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn north_american_numbers_in_any_format_become_one_e164() {
        let policy = PhonePolicy::default();
        for input in [
            "+1 415 555 2671",
            "(415) 555-2671",
            "415.555.2671",
            "  +14155552671 ",
            "1-415-555-2671",
        ] {
            assert_eq!(
                policy.normalize(input).unwrap().e164(),
                "+14155552671",
                "{input}"
            );
        }
        // Canada shares +1.
        assert_eq!(
            policy.normalize("+1 604 555 0199").unwrap().e164(),
            "+16045550199"
        );
    }

    #[test]
    fn other_regions_and_garbage_are_refused_without_echoing_the_number() {
        let policy = PhonePolicy::default();
        let uk = policy.normalize("+44 20 7946 0958").unwrap_err();
        assert!(
            matches!(uk, PhoneError::RegionNotAllowed { code: 44, .. }),
            "{uk:?}"
        );
        assert!(!uk.to_string().contains("7946"));
        assert_eq!(
            policy.normalize("not a number").unwrap_err(),
            PhoneError::Unparseable
        );
        assert_eq!(policy.normalize("").unwrap_err(), PhoneError::Length);
        assert_eq!(
            policy.normalize(&"1".repeat(65)).unwrap_err(),
            PhoneError::Length
        );
        // Area code 099 does not exist.
        assert_eq!(
            policy.normalize("+1 099 555 0100").unwrap_err(),
            PhoneError::Invalid
        );
        // A policy that allows the UK takes it.
        let uk_too = PhonePolicy {
            allowed_calling_codes: vec![1, 44],
        };
        assert_eq!(
            uk_too.normalize("+44 20 7946 0958").unwrap().e164(),
            "+442079460958"
        );
    }

    #[test]
    fn a_phone_never_prints() {
        let phone = PhonePolicy::default().normalize("+1 415 555 2671").unwrap();
        assert_eq!(format!("{phone:?}"), "Phone(<redacted>)");
    }
}
