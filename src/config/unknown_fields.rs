//! Unknown keys noted while the typed parse reads them: a deserializer wrapper, so a file that
//! reads is parsed once.
//!
//! serde's derived structs skip a key they do not know; the wrapper sees the struct's fields
//! and each key with its place, and notes the ones not among them, with the same message the
//! schema walk ([`super::keys`]) gives. The walk stays for files that do not read: serde stops
//! at the first error, and the walk finds the unknown keys after it too.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::UnitDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::keys::{Node, message};
use super::spanned::{self, SpannedVisitor};
use super::{Spanned, span_of};
use crate::diagnostic::Span;

/// The unknown keys met so far, in file order: the message and the place.
pub(super) type Found = RefCell<Vec<(String, Span)>>;

/// `T` read from `de`, noting in `found` every key a struct of `T` does not have.
pub(super) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    de: D,
    found: &Found,
) -> Result<T, D::Error> {
    T::deserialize(Noting { inner: de, found })
}

/// A deserializer (or seed, visitor, access) that hands the wrapper on to whatever it reads.
struct Noting<'f, X> {
    inner: X,
    found: &'f Found,
}

impl<'f, X> Noting<'f, X> {
    fn wrap<Y>(&self, inner: Y) -> Noting<'f, Y> {
        Noting {
            inner,
            found: self.found,
        }
    }
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let visitor = self.wrap(visitor);
            self.inner.$method($($arg,)* visitor)
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Noting<'_, D> {
    type Error = D::Error;

    forward! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_string(); deserialize_bytes(); deserialize_byte_buf();
        deserialize_option(); deserialize_unit(); deserialize_seq(); deserialize_map();
        deserialize_identifier(); deserialize_ignored_any();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.wrap(Struct { visitor, fields });
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Noting<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        let de = self.wrap(de);
        self.inner.deserialize(de)
    }
}

macro_rules! visit {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Noting<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    visit! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char); visit_str(&str);
        visit_borrowed_str(&'de str); visit_string(String); visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let de = self.wrap(de);
        self.inner.visit_some(de)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let de = self.wrap(de);
        self.inner.visit_newtype_struct(de)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.wrap(seq);
        self.inner.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let map = self.wrap(map);
        self.inner.visit_map(map)
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let data = self.wrap(data);
        self.inner.visit_enum(data)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Noting<'_, A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_element_seed(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Noting<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_key_seed(seed)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.next_value_seed(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'f, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Noting<'f, A> {
    type Error = A::Error;
    type Variant = Noting<'f, A::Variant>;
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let found = self.found;
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Noting {
                inner: variant,
                found,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Noting<'_, A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.wrap(seed);
        self.inner.newtype_variant_seed(seed)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(visitor);
        self.inner.tuple_variant(len, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.wrap(Struct { visitor, fields });
        self.inner.struct_variant(fields, visitor)
    }
}

/// The visitor of a struct with the fields it knows. Only a mapping or a sequence makes a
/// struct: anything else is an error either way, and a file with an error goes to the walk.
struct Struct<V> {
    visitor: V,
    fields: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Noting<'_, Struct<V>> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.visitor.expecting(f)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.wrap(seq);
        self.inner.visitor.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let fields = self.inner.fields;
        let map = self.wrap(Fields {
            map,
            fields,
            skipping: false,
        });
        self.inner.visitor.visit_map(map)
    }
}

/// A struct's mapping: each key is checked against the fields.
struct Fields<A> {
    map: A,
    fields: &'static [&'static str],
    /// The last key was unknown: its value is skipped.
    skipping: bool,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Noting<'_, Fields<A>> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = Key {
            seed,
            fields: self.inner.fields,
            found: self.found,
        };
        let Some((key, known)) = self.inner.map.next_key_seed(key)? else {
            return Ok(None);
        };
        self.inner.skipping = !known;
        Ok(Some(key))
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        if self.inner.skipping {
            // Read as the walk reads it, so a file the walk refuses is refused here too.
            self.inner.map.next_value::<Node>()?;
            return seed.deserialize(UnitDeserializer::new());
        }
        let seed = self.wrap(seed);
        self.inner.map.next_value_seed(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.map.size_hint()
    }
}

/// Reads a struct's key for `seed`, noting it when it is not among `fields`; gives whether
/// it is. A YAML key has a place; a key serde-saphyr makes up for its own structs (a
/// [`Spanned`]'s location) has none, and is always known.
struct Key<'f, K> {
    seed: K,
    fields: &'static [&'static str],
    found: &'f Found,
}

impl<K> Key<'_, K> {
    /// Notes `name` if it is unknown; whether it is known.
    fn check(&self, name: &str, span: Span) -> bool {
        let known = self.fields.contains(&name);
        if !known {
            let mut names = self.fields.to_vec();
            // In the schema's order, so a tie in "did you mean" goes the same way.
            names.sort_unstable();
            let note = (message(name, names.into_iter()), span);
            self.found.borrow_mut().push(note);
        }
        known
    }
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for Key<'_, K> {
    type Value = (K::Value, bool);
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_newtype_struct(spanned::NAME, self)
    }
}

impl<'de, K: DeserializeSeed<'de>> Visitor<'de> for Key<'_, K> {
    type Value = (K::Value, bool);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let known = self.check(v, Span::start());
        let key = self.seed.deserialize(v.into_deserializer())?;
        Ok((key, known))
    }
    /// serde-saphyr's way of handing over a key with its place.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.placed(SpannedVisitor(PhantomData).visit_newtype_struct(de)?)
    }
    /// The plain reader's way.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.placed(SpannedVisitor(PhantomData).visit_map(map)?)
    }
}

impl<'de, K: DeserializeSeed<'de>> Key<'_, K> {
    fn placed<E: de::Error>(self, name: Spanned<String>) -> Result<(K::Value, bool), E> {
        let known = self.check(&name.value, span_of(&name));
        let key = self.seed.deserialize(name.value.into_deserializer())?;
        Ok((key, known))
    }
}
