//! What every value held as checked text shares. `#[serde(try_from = "String", into =
//! "String")]` reads such a value through its parser and writes it as its text; a newtype over
//! its `String` also prints, borrows and compares as that text, so call sites need no
//! `.as_str()` to compare with a literal or look it up in a map keyed by `str`.

/// `TryFrom<String>` through the type's `FromStr`, and `From<T> for String` through its
/// `Display`: what serde's `try_from`/`into` need.
macro_rules! serde_as_text {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<$t, String> {
                s.parse()
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    };
}

/// For `struct T(String)` whose `FromStr` checks the text: serde through it, and `Display`,
/// `Deref<Target = str>`, `AsRef<str>`, `Borrow<str>` and `==` with `str`, `&str` and `String`
/// either way round.
macro_rules! text_newtype {
    ($t:ident) => {
        $crate::text_value::serde_as_text!($t);

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$t> for String {
            fn eq(&self, other: &$t) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$t> for &str {
            fn eq(&self, other: &$t) -> bool {
                *self == other.0
            }
        }
    };
}

pub(crate) use {serde_as_text, text_newtype};
