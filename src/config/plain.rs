//! Plain YAML read straight from the parser's events: the subset nearly every pipeline file
//! is written in, at a fraction of serde-saphyr's cost.
//!
//! serde-saphyr spends about three times its own parser's time turning events into values:
//! it records every key and replays it, and hands over each place as a map of maps. This
//! reader takes the same parser's events as they come. It gives up at the first thing
//! outside the subset: an anchor, alias, tag or merge key, a plain scalar whose type the
//! schema decides (`~`, `1.5`, `yes`) where the type asked for is not text, a duplicate key,
//! a second document, and any error, the types' own too. [`super::parse`] then reads the
//! file again with serde-saphyr, which words every error. So the two readers differ only in
//! speed, which the tests below check value by value, places included.

use std::borrow::Cow;
use std::fmt;

use granit_parser::{Event, Parser, ScalarStyle, Span, StrInput};
use rustc_hash::FxHashSet;
use serde::de::value::{CowStrDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use super::spanned::{self, Location};

/// Deepest nesting read here, and the longest file: below serde-saphyr's limits (64 levels,
/// 64 MiB of scalars), so a file near them goes to serde-saphyr, which judges it.
const MAX_DEPTH: usize = 60;
const MAX_BYTES: usize = 32 << 20;

/// Why the plain reader gave a file up. Never shown: the file is read again.
#[derive(Debug)]
pub(super) struct NotPlain;

impl fmt::Display for NotPlain {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("not plain YAML")
    }
}

impl std::error::Error for NotPlain {}

impl de::Error for NotPlain {
    fn custom<T: fmt::Display>(_: T) -> NotPlain {
        NotPlain
    }
}

type Result<T> = std::result::Result<T, NotPlain>;

/// The one document of `text`, read by `read`; `None` when the file is not plain YAML, does
/// not read, or has more than `max_nodes` nodes.
pub(super) fn read<'de, T>(
    text: &'de str,
    max_nodes: usize,
    read: impl FnOnce(&mut Reader<'de>) -> Result<T>,
) -> Option<T> {
    if text.len() > MAX_BYTES {
        return None;
    }
    // serde-saphyr's parser settings, which are the parser's defaults, but for comments.
    let options = granit_parser::options! { emit_comments: false };
    let mut reader = Reader {
        parser: Parser::new_from_str_with_options(text, options),
        peeked: None,
        nodes: 0,
        max_nodes,
        depth: 0,
    };
    reader.document(read).ok()
}

/// Whether the plain reader reads `text` as a pipeline, for tests: the files it gives up
/// are read as well, only slower.
#[cfg(test)]
pub(super) fn reads(text: &str) -> bool {
    use serde::Deserialize as _;
    read(text, super::MAX_NODES, |de| {
        super::PipelineFile::deserialize(de)
    })
    .is_some()
}

/// An event of the subset, with the place it starts: 48 bytes, where the parser's event
/// and span take 256, which every move copies.
enum Ev<'de> {
    /// A scalar's text, and whether it is plain (neither quoted nor a block scalar).
    Scalar(Cow<'de, str>, bool),
    SequenceStart,
    SequenceEnd,
    MappingStart,
    MappingEnd,
    StreamStart,
    StreamEnd,
    DocumentStart,
    DocumentEnd,
}

/// The parser's events, one looked ahead; a deserializer of the next node.
pub(super) struct Reader<'de> {
    parser: Parser<'de, StrInput<'de>>,
    peeked: Option<(Ev<'de>, Location)>,
    nodes: usize,
    max_nodes: usize,
    depth: usize,
}

impl<'de> Reader<'de> {
    fn document<T>(&mut self, read: impl FnOnce(&mut Reader<'de>) -> Result<T>) -> Result<T> {
        if !matches!(self.next()?.0, Ev::StreamStart)
            || !matches!(self.next()?.0, Ev::DocumentStart)
            || matches!(self.peek()?.0, Ev::DocumentEnd)
        {
            return Err(NotPlain);
        }
        let value = read(self)?;
        if !matches!(self.next()?.0, Ev::DocumentEnd) || !matches!(self.next()?.0, Ev::StreamEnd) {
            return Err(NotPlain);
        }
        Ok(value)
    }

    fn next(&mut self) -> Result<(Ev<'de>, Location)> {
        match self.peeked.take() {
            Some(event) => Ok(event),
            None => self.pull(),
        }
    }

    fn peek(&mut self) -> Result<&(Ev<'de>, Location)> {
        if self.peeked.is_none() {
            let event = self.pull()?;
            self.peeked = Some(event);
        }
        self.peeked.as_ref().ok_or(NotPlain)
    }

    /// The parser's next event, if the subset has it.
    fn pull(&mut self) -> Result<(Ev<'de>, Location)> {
        let (event, span) = (self.parser.next_event())
            .ok_or(NotPlain)?
            .map_err(|_| NotPlain)?;
        let event = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.node(anchor, tag.is_some())?;
                Ev::Scalar(text, matches!(style, ScalarStyle::Plain))
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.node(anchor, tag.is_some())?;
                Ev::SequenceStart
            }
            Event::MappingStart(_, anchor, tag) => {
                self.node(anchor, tag.is_some())?;
                Ev::MappingStart
            }
            Event::SequenceEnd => Ev::SequenceEnd,
            Event::MappingEnd => Ev::MappingEnd,
            Event::StreamStart => Ev::StreamStart,
            Event::StreamEnd => Ev::StreamEnd,
            Event::DocumentStart(_, None) => Ev::DocumentStart,
            Event::DocumentEnd => Ev::DocumentEnd,
            _ => return Err(NotPlain),
        };
        Ok((event, location(&span)))
    }

    /// Counts a node, which must have no anchor and no tag.
    fn node(&mut self, anchor: usize, tagged: bool) -> Result<()> {
        self.nodes += 1;
        if anchor != 0 || tagged || self.nodes > self.max_nodes {
            return Err(NotPlain);
        }
        Ok(())
    }

    fn seq<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.nested(|reader| {
            let mut access = Seq {
                reader,
                done: false,
            };
            let value = visitor.visit_seq(&mut access)?;
            Ok((value, access.done))
        })
    }

    fn map<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        self.nested(|reader| {
            let mut access = Map {
                reader,
                seen: Seen::default(),
                done: false,
            };
            let value = visitor.visit_map(&mut access)?;
            Ok((value, access.done))
        })
    }

    /// Reads one sequence or mapping a level deeper; `read` says whether it reached its end.
    fn nested<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<(T, bool)>) -> Result<T> {
        self.enter()?;
        let (value, done) = read(self)?;
        // A visitor that stopped early left the rest unread.
        if !done {
            return Err(NotPlain);
        }
        self.depth -= 1;
        Ok(value)
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(NotPlain);
        }
        Ok(())
    }

    /// The next scalar as text, for a type that takes text: anything but a plain null.
    fn text(&mut self) -> Result<Cow<'de, str>> {
        match self.next()?.0 {
            Ev::Scalar(text, plain) if !(plain && nullish(&text)) => Ok(text),
            _ => Err(NotPlain),
        }
    }

    /// The next scalar if it is plain, for a type that takes a boolean or a number.
    fn plain(&mut self) -> Result<Cow<'de, str>> {
        match self.next()?.0 {
            Ev::Scalar(text, true) => Ok(text),
            _ => Err(NotPlain),
        }
    }

    fn unsigned<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let text = self.plain()?;
        // Decimal digits only, without a leading zero: `+1`, `0x10` and `1_000` are the
        // schema's to judge.
        let decimal = text.bytes().all(|b| b.is_ascii_digit())
            && !text.is_empty()
            && (text.len() == 1 || !text.starts_with('0'));
        let number = text
            .parse::<u64>()
            .ok()
            .filter(|_| decimal)
            .ok_or(NotPlain)?;
        visitor.visit_u64(number)
    }
}

/// The plain scalars serde-saphyr reads as null.
fn nullish(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Whether a plain scalar is surely a string, whatever the schema: not null, not a word some
/// schema reads as a boolean, not anything that starts like a number.
fn surely_text(text: &str) -> bool {
    const WORDS: [&str; 8] = ["true", "false", "yes", "no", "on", "off", "y", "n"];
    if nullish(text) || text == "<<" || WORDS.iter().any(|w| text.eq_ignore_ascii_case(w)) {
        return false;
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let mut bytes = unsigned.bytes();
    match bytes.next() {
        None | Some(b'0'..=b'9') => false,
        // `.5`, `.inf`, `.nan`; `./build.sh` is a path.
        Some(b'.') => !matches!(bytes.next(), Some(b'0'..=b'9' | b'i' | b'I' | b'n' | b'N')),
        Some(_) => true,
    }
}

fn visit_text<'de, V: Visitor<'de>>(visitor: V, text: Cow<'de, str>) -> Result<V::Value> {
    match text {
        Cow::Borrowed(text) => visitor.visit_borrowed_str(text),
        Cow::Owned(text) => visitor.visit_string(text),
    }
}

/// The place of the node that starts at `span`, as serde-saphyr gives it.
fn location(span: &Span) -> Location {
    let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let len = span.end.index().saturating_sub(span.start.index());
    Location::new(
        small(span.start.line()),
        small(span.start.col().saturating_add(1)),
        small(len),
    )
}

macro_rules! not_plain {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(self, $(_: $arg,)* _: V) -> Result<V::Value> {
            Err(NotPlain)
        })*
    };
}

impl<'de> Deserializer<'de> for &mut Reader<'de> {
    type Error = NotPlain;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()?.0 {
            Ev::Scalar(text, true) => match &*text {
                "true" => visitor.visit_bool(true),
                "false" => visitor.visit_bool(false),
                other if surely_text(other) => visit_text(visitor, text),
                _ => Err(NotPlain),
            },
            Ev::Scalar(text, false) => visit_text(visitor, text),
            Ev::SequenceStart => self.seq(visitor),
            Ev::MappingStart => self.map(visitor),
            _ => Err(NotPlain),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match &*self.plain()? {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(NotPlain),
        }
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.unsigned(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.unsigned(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.unsigned(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.unsigned(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let text = self.text()?;
        visit_text(visitor, text)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()?.0 {
            Ev::Scalar(text, plain) if !plain || surely_text(&text) => visit_text(visitor, text),
            _ => Err(NotPlain),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match &self.peek()?.0 {
            Ev::Scalar(text, true) if nullish(text) => Err(NotPlain),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()?.0 {
            Ev::SequenceStart => self.seq(visitor),
            _ => Err(NotPlain),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.next()?.0 {
            Ev::MappingStart => self.map(visitor),
            _ => Err(NotPlain),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == spanned::NAME {
            let at = self.peek()?.1;
            return visitor.visit_map(Placed {
                at: Some(at),
                value: Some(self),
            });
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.next()?.0 {
            // A unit variant, by its name.
            Ev::Scalar(name, plain) if !plain || surely_text(&name) => {
                visitor.visit_enum(CowStrDeserializer::new(name))
            }
            // `{variant: value}`: one key.
            Ev::MappingStart => self.nested(|reader| {
                let name = match reader.next()?.0 {
                    Ev::Scalar(name, plain) if !plain || surely_text(&name) => name,
                    _ => return Err(NotPlain),
                };
                let value = visitor.visit_enum(Variant {
                    reader: &mut *reader,
                    name,
                })?;
                Ok((value, matches!(reader.next()?.0, Ev::MappingEnd)))
            }),
            _ => Err(NotPlain),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // Read like any value, so what it holds is held to the same subset.
        self.deserialize_any(de::IgnoredAny)?;
        visitor.visit_unit()
    }

    not_plain! {
        deserialize_i8(); deserialize_i16(); deserialize_i32(); deserialize_i64();
        deserialize_i128(); deserialize_u128(); deserialize_f32(); deserialize_f64();
        deserialize_char(); deserialize_bytes(); deserialize_byte_buf(); deserialize_unit();
        deserialize_unit_struct(&'static str); deserialize_tuple(usize);
        deserialize_tuple_struct(&'static str, usize);
    }
}

struct Seq<'a, 'de> {
    reader: &'a mut Reader<'de>,
    done: bool,
}

impl<'de> SeqAccess<'de> for Seq<'_, 'de> {
    type Error = NotPlain;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if matches!(self.reader.peek()?.0, Ev::SequenceEnd) {
            self.reader.next()?;
            self.done = true;
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

struct Map<'a, 'de> {
    reader: &'a mut Reader<'de>,
    seen: Seen<'de>,
    done: bool,
}

impl<'de> MapAccess<'de> for Map<'_, 'de> {
    type Error = NotPlain;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.reader.next()? {
            (Ev::MappingEnd, _) => {
                self.done = true;
                Ok(None)
            }
            // Even quoted, `<<` is left to serde-saphyr: merge keys are its to read.
            (Ev::Scalar(text, plain), at) if (!plain || surely_text(&text)) && text != "<<" => {
                if !self.seen.insert(text.clone()) {
                    return Err(NotPlain);
                }
                seed.deserialize(Key { text, at }).map(Some)
            }
            _ => Err(NotPlain),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        seed.deserialize(&mut *self.reader)
    }
}

/// The keys of one mapping so far: a short list, a set once it grows.
#[derive(Default)]
struct Seen<'de> {
    few: Vec<Cow<'de, str>>,
    many: FxHashSet<Cow<'de, str>>,
}

impl<'de> Seen<'de> {
    /// Adds `key`; false if it was there.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        const FEW: usize = 16;
        if self.many.is_empty() {
            if self.few.contains(&key) {
                return false;
            }
            if self.few.len() < FEW {
                self.few.push(key);
                return true;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(key)
    }
}

/// A mapping key: always text here.
struct Key<'de> {
    text: Cow<'de, str>,
    at: Location,
}

impl<'de> Deserializer<'de> for Key<'de> {
    type Error = NotPlain;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visit_text(visitor, self.text)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == spanned::NAME {
            return visitor.visit_map(Placed {
                at: Some(self.at),
                value: Some(CowStrDeserializer::new(self.text)),
            });
        }
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// A [`spanned::Spanned`] as the plain reader hands it over: one entry, the place to the
/// value.
struct Placed<D> {
    at: Option<Location>,
    value: Option<D>,
}

impl<'de, D: Deserializer<'de, Error = NotPlain>> MapAccess<'de> for Placed<D> {
    type Error = NotPlain;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.at.take() {
            Some(at) => seed.deserialize(At(at)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        seed.deserialize(self.value.take().ok_or(NotPlain)?)
    }
}

/// A [`Location`] as three numbers.
struct At(Location);

impl<'de> Deserializer<'de> for At {
    type Error = NotPlain;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let at = self.0;
        let mut numbers = SeqDeserializer::new([at.line(), at.column(), at.width()].into_iter());
        let value = visitor.visit_seq(&mut numbers)?;
        numbers.end()?;
        Ok(value)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// `{variant: value}` being read.
struct Variant<'a, 'de> {
    reader: &'a mut Reader<'de>,
    name: Cow<'de, str>,
}

impl<'a, 'de> EnumAccess<'de> for Variant<'a, 'de> {
    type Error = NotPlain;
    type Variant = &'a mut Reader<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self::Variant)> {
        let name = seed.deserialize(CowStrDeserializer::<NotPlain>::new(self.name))?;
        Ok((name, self.reader))
    }
}

impl<'de> VariantAccess<'de> for &mut Reader<'de> {
    type Error = NotPlain;

    fn unit_variant(self) -> Result<()> {
        Err(NotPlain)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value> {
        Err(NotPlain)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::fuzz::shown;
    use super::super::{parse, parse_with_walk};

    /// Reads `text` both ways: the plain reader first, then serde-saphyr alone.
    fn both(text: &str) -> (String, String) {
        let path = Path::new("pipeline.yml");
        let once = shown(parse(path, text.to_owned()));
        let saphyr = shown(parse_with_walk(path, text.to_owned()));
        (once, saphyr)
    }

    #[test]
    fn plain_files_read_plainly_and_as_serde_saphyr_reads_them() {
        let chain: String = (0..50).fold("version: 1\nstages:\n".to_owned(), |text, i| {
            let needs = if i == 0 {
                String::new()
            } else {
                format!(", needs: [s{}]", i - 1)
            };
            text + &format!("  s{i}: {{run: 'true'{needs}}}\n")
        });
        let texts = [
            include_str!("../../pipeline.yml").to_owned(),
            chain,
            // Every scalar style, places past non-ASCII text, a comment, an unknown key,
            // explicit document markers and values that look like other types but are text.
            concat!(
                "---\n",
                "version: 1 # the format\n",
                "name: \"démo — ünïcode\"\n",
                "env: {A: 1, B: 3.10, C: true, D: '', E: \"x\\ty\", F: 0x1F}\n",
                "stages:\n",
                "  'ça va':\n",
                "    run: |\n      echo one\n      echo two\n",
                "    inputs: [./src/*.rs, \"é/*\"]\n",
                "    retry: {attempts: 3, delay: 2s}\n",
                "    timeout: 20m\n",
                "    colour: blue\n",
                "  next:\n",
                "    run: >\n      folded\n      text\n",
                "    needs: ['ça va']\n",
                "    when: {branch: [main, 'release/*']}\n",
                "    cache: false\n",
                "  third: {run: [true, make check], needs_optional: [next]}\n",
                "...\n",
            )
            .to_owned(),
        ];
        for text in texts {
            assert!(super::reads(&text), "the plain reader gave up on:\n{text}");
            let (once, saphyr) = both(&text);
            assert_eq!(once, saphyr, "for:\n{text}");
        }
    }

    #[test]
    fn what_is_not_plain_is_left_to_serde_saphyr() {
        let texts = [
            // Anchors, aliases and merge keys.
            "version: 1\nstages:\n  a: &t {run: make}\n  b: *t\n",
            "version: 1\ntemplates:\n  t: &t {run: make}\nstages:\n  b: {<<: *t, needs: []}\n",
            // Tags, and scalars whose type the schema decides.
            "version: 1\nstages:\n  a: {run: !!str 5}\n",
            "version: 1\nstages:\n  a: {run: 5}\n",
            "version: 1\nstages:\n  a: {run: ~}\n",
            "version: 1\nstages:\n  a: {run: yes}\n",
            "version: 1\nstages:\n  a: {run: .inf}\n",
            "version: 1\nstages:\n  a:\n",
            "version: 0x1\n",
            "version: '1'\n",
            "version: 1\nstages:\n  1: {run: make}\n",
            // Duplicate keys, in a struct and in a mapping of names.
            "version: 1\nstages:\n  a: {run: make, run: make}\n",
            "version: 1\nstages:\n  a: {run: make}\n  a: {run: make}\n",
            // No document, two of them, a YAML directive, and broken syntax.
            "",
            "version: 1\n---\nversion: 1\n",
            "%YAML 1.2\n---\nversion: 1\n",
            "version: 1\nstages: {a: [}\n",
            // Types that do not fit.
            "version: 1\nstages:\n  a: {needs: b}\n",
            "version: 1\nstages: [a, b]\n",
        ];
        for text in texts {
            assert!(!super::reads(text), "the plain reader read:\n{text}");
            let (once, saphyr) = both(text);
            assert_eq!(once, saphyr, "for:\n{text}");
        }
    }
}
