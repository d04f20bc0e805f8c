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

/// For a fieldless enum whose values are words (in the registry, in JSON, on screen):
/// `as_str`, `ALL`, `Display`, and a `FromStr` that takes exactly those words and names them
/// when it refuses, e.g. ``"`x` is not a sweep outcome (pr_opened, dropped)"``. The words are
/// the ones serde writes, so `#[serde(rename_all = "snake_case")]` goes with them.
#[macro_export]
macro_rules! words {
    ($t:ident, $what:literal, { $($v:ident => $w:literal),+ $(,)? }) => {
        impl $t {
            /// Every value, in declaration order.
            pub const ALL: &'static [$t] = &[$($t::$v),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $w),+
                }
            }
        }

        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> ::std::result::Result<$t, String> {
                match s {
                    $($w => Ok($t::$v),)+
                    other => Err(format!(
                        "`{}` is not {} ({})",
                        $crate::text::clean(&other.chars().take(80).collect::<String>()),
                        $what,
                        [$($w),+].join(", ")
                    )),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    enum Light {
        Green,
        TimedOut,
    }

    crate::words!(Light, "a light", { Green => "green", TimedOut => "timed_out" });

    #[test]
    fn words_read_back_what_they_write_and_refuse_the_rest_by_name() {
        for &l in Light::ALL {
            assert_eq!(l.as_str().parse::<Light>(), Ok(l));
            assert_eq!(l.to_string(), l.as_str());
            assert_eq!(serde_json::to_value(l).unwrap(), l.as_str(), "the words are serde's");
        }
        let e = "Green\u{1b}[2J".parse::<Light>().unwrap_err();
        assert_eq!(
            e, "`Green\\u{1b}[2J` is not a light (green, timed_out)",
            "escaped, never raw"
        );
    }
}
