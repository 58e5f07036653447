//! Statuses and kinds are enums in memory and their names in the database and on the
//! wire: this macro writes both directions once, so a name is spelled in one place and
//! a stored name this build does not know is an error rather than a silent default.

/// `names!(Type { Variant = "name", … })`: `Type::name(self)` and `Type::parse(&str)`.
macro_rules! names {
    ($type:ty { $($variant:ident = $name:literal),* $(,)? }) => {
        impl $type {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// As stored and shown.
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            /// The value stored as `name`; `None` for a name this build does not know.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Self::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub(crate) use names;
