//! A value read from YAML with its place in the file, from either YAML reader.
//!
//! Both readers know a [`Spanned`] by the name serde-saphyr gives its own: serde-saphyr
//! hands over its place through its own `Spanned`, and the plain reader ([`super::plain`])
//! as a mapping of one entry, the [`Location`] to the value.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// The name by which both readers recognize a [`Spanned`] being read.
pub(super) const NAME: &str = "__yaml_spanned";

/// Where a YAML node starts, line and column counted from 1, and how many characters wide
/// it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    line: u32,
    column: u32,
    width: u32,
}

impl Location {
    pub(super) fn new(line: u32, column: u32, width: u32) -> Location {
        Location {
            line,
            column,
            width,
        }
    }

    pub fn line(&self) -> u32 {
        self.line
    }

    pub fn column(&self) -> u32 {
        self.column
    }

    /// The node's width in characters.
    pub fn width(&self) -> u32 {
        self.width
    }
}

impl From<serde_saphyr::Location> for Location {
    fn from(at: serde_saphyr::Location) -> Location {
        let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Location::new(small(at.line()), small(at.column()), small(at.span().len()))
    }
}

/// The plain reader hands a [`Location`] over as three numbers.
impl<'de> Deserialize<'de> for Location {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Location, D::Error> {
        struct LocationVisitor;
        impl<'de> Visitor<'de> for LocationVisitor {
            type Value = Location;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a line, a column and a length")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Location, A::Error> {
                let mut next = || -> Result<u32, A::Error> {
                    seq.next_element()?
                        .ok_or_else(|| de::Error::custom("a location has three numbers"))
                };
                Ok(Location::new(next()?, next()?, next()?))
            }
        }
        d.deserialize_tuple(3, LocationVisitor)
    }
}

/// A value and the place of the node it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    /// Where the value is written; for an alias, the alias.
    pub referenced: Location,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Spanned<T>, D::Error> {
        d.deserialize_newtype_struct(NAME, SpannedVisitor(PhantomData))
    }
}

/// Reads a [`Spanned`] from whichever reader offers it.
pub(super) struct SpannedVisitor<T>(pub(super) PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
    type Value = Spanned<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value with its place")
    }

    /// serde-saphyr: its own `Spanned`, with the place it knows.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Spanned<T>, D::Error> {
        let read = serde_saphyr::Spanned::<T>::deserialize(Placed(de))?;
        Ok(Spanned {
            value: read.value,
            referenced: read.referenced.into(),
        })
    }

    /// The plain reader: one entry, the place to the value.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
        let Some(referenced) = map.next_key::<Location>()? else {
            return Err(de::Error::custom("a place without a value"));
        };
        let value = map.next_value()?;
        Ok(Spanned { value, referenced })
    }
}

/// The deserializer serde-saphyr hands a `Spanned`, offered again as one: its own
/// `Spanned` asks for the place a second time.
struct Placed<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Placed<D> {
    type Error = D::Error;
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_newtype_struct(self.0)
    }
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}
