//! The binary MOF (BMF) of `wmi/mof/rvscsi.mof`: what WMI reads from the driver's `MOFDATA`
//! resource to learn the classes of the data blocks the miniport registers.
//!
//! mofcomp's output format is undocumented; this encoder follows the structure decoded publicly
//! (the `bmfdec` project's description of it, and the `WBEM_Binary_MOF` layout of the old DDK's
//! `bmof.h`), written from that knowledge:
//!
//! - the resource: `"FOMB"`, version 1, the compressed size, the decompressed size, then the
//!   data compressed with the DoubleSpace "DS-01" scheme (`compress`);
//! - the decompressed data: `"FOMB"`, its total length, 1, 1, the number of classes, then one
//!   object per class: `Length, OffsetQualifierList (0), OffsetPropertyList, OffsetMethodList,
//!   Type (0: a class)`, the qualifier list, the property list (the
//!   class's properties, then the `__CLASS` property with the class name as its value) and an
//!   empty method list;
//! - a qualifier list: `Length, Count`, then per qualifier `Length, Type, OffsetName (0),
//!   OffsetValue`, the name (UTF-16, NUL-terminated) and the value (a `VARIANT_BOOL` widened to
//!   32 bits, a 32-bit integer or a UTF-16 string); offsets count from the end of the fixed
//!   fields;
//! - a property: `Length, Type (the CIM type), OffsetName (0), OffsetValue (-1: none),
//!   OffsetQualifierSet`, the name, then its qualifiers, `CIMTYPE` (the type as written) first.
//!
//! The optional `BMOFQUALFLAVOR11` trailer (qualifier flavours) is left out: the MOF declares no
//! flavours. Only the MOF subset `rvscsi.mof` uses is accepted (classes with qualifiers and
//! scalar properties); anything else is an error naming it, never silently dropped.

/// A qualifier's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QualifierValue {
    /// A flag qualifier (`key`, `read`): true.
    Flag,
    /// An integer (`WmiDataId(3)`).
    Integer(i32),
    /// A string (`Description("...")`).
    Text(String),
}

/// A qualifier: name and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qualifier {
    pub name: String,
    pub value: QualifierValue,
}

/// A property: CIM type name as written, name, qualifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    pub cim_type: String,
    pub name: String,
    pub qualifiers: Vec<Qualifier>,
}

/// A class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    pub name: String,
    pub qualifiers: Vec<Qualifier>,
    pub properties: Vec<Property>,
}

/// The CIM type code (`CIM_*`, as the BMF and WMI store it) of a MOF type name.
pub fn cim_type(name: &str) -> Option<u32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "sint16" => 0x02,
        "sint32" => 0x03,
        "string" => 0x08,
        "boolean" => 0x0b,
        "sint8" => 0x10,
        "uint8" => 0x11,
        "uint16" => 0x12,
        "uint32" => 0x13,
        "sint64" => 0x14,
        "uint64" => 0x15,
        _ => return None,
    })
}

/// `CIM_BOOLEAN`, `CIM_SINT32`, `CIM_STRING`: the qualifier value types.
const QUALIFIER_BOOLEAN: u32 = 0x0b;
const QUALIFIER_SINT32: u32 = 0x03;
const QUALIFIER_STRING: u32 = 0x08;
/// "No offset" in the BMF's offset fields.
const NONE: u32 = u32::MAX;
/// `VARIANT_TRUE`, widened to 32 bits.
const VARIANT_TRUE: u32 = 0xffff;

// --- The MOF subset ---------------------------------------------------------------------------

/// The tokens of the MOF subset.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Number(i64),
    Symbol(char),
}

fn tokens(source: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = source.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '/' {
            chars.next();
            match chars.next() {
                Some('/') => {
                    for next in chars.by_ref() {
                        if next == '\n' {
                            break;
                        }
                    }
                }
                Some('*') => {
                    let mut last = ' ';
                    for next in chars.by_ref() {
                        if last == '*' && next == '/' {
                            break;
                        }
                        last = next;
                    }
                }
                _ => return Err("a lone '/' in the MOF".into()),
            }
        } else if c == '"' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('\\') => text.push('\\'),
                        Some('"') => text.push('"'),
                        Some('n') => text.push('\n'),
                        Some('t') => text.push('\t'),
                        other => return Err(format!("unsupported escape \\{other:?} in the MOF")),
                    },
                    Some(other) => text.push(other),
                    None => return Err("an unterminated string in the MOF".into()),
                }
            }
            out.push(Token::Text(text));
        } else if c.is_ascii_digit() || c == '-' {
            let mut text = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || (text.is_empty() && d == '-') {
                    text.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Number(
                text.parse()
                    .map_err(|_| format!("bad number {text} in the MOF"))?,
            ));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut word = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' {
                    word.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Word(word));
        } else if "[](){},;".contains(c) {
            out.push(Token::Symbol(c));
            chars.next();
        } else {
            return Err(format!("unexpected character {c:?} in the MOF"));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Result<Token, String> {
        let token = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or("the MOF ends early")?;
        self.at += 1;
        Ok(token)
    }
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }
    fn expect(&mut self, symbol: char) -> Result<(), String> {
        match self.next()? {
            Token::Symbol(found) if found == symbol => Ok(()),
            other => Err(format!("expected '{symbol}' in the MOF, found {other:?}")),
        }
    }
    fn word(&mut self) -> Result<String, String> {
        match self.next()? {
            Token::Word(word) => Ok(word),
            other => Err(format!("expected a name in the MOF, found {other:?}")),
        }
    }

    /// `[name, name(value), ...]`, or nothing.
    fn qualifiers(&mut self) -> Result<Vec<Qualifier>, String> {
        let mut qualifiers = Vec::new();
        if self.peek() != Some(&Token::Symbol('[')) {
            return Ok(qualifiers);
        }
        self.expect('[')?;
        loop {
            let name = self.word()?;
            let value = if self.peek() == Some(&Token::Symbol('(')) {
                self.expect('(')?;
                let value = match self.next()? {
                    Token::Text(text) => QualifierValue::Text(text),
                    Token::Number(number) => QualifierValue::Integer(
                        i32::try_from(number)
                            .map_err(|_| format!("qualifier {name}: {number} exceeds 32 bits"))?,
                    ),
                    other => return Err(format!("qualifier {name}: unsupported value {other:?}")),
                };
                self.expect(')')?;
                value
            } else {
                QualifierValue::Flag
            };
            qualifiers.push(Qualifier { name, value });
            match self.next()? {
                Token::Symbol(',') => {}
                Token::Symbol(']') => return Ok(qualifiers),
                other => return Err(format!("expected ',' or ']' in the MOF, found {other:?}")),
            }
        }
    }
}

/// The classes of a MOF source in the subset `rvscsi.mof` uses.
///
/// # Errors
/// The first construct outside the subset, or a syntax error.
pub fn parse_mof(source: &str) -> Result<Vec<Class>, String> {
    let mut parser = Parser {
        tokens: tokens(source)?,
        at: 0,
    };
    let mut classes = Vec::new();
    while parser.peek().is_some() {
        let qualifiers = parser.qualifiers()?;
        let keyword = parser.word()?;
        if keyword != "class" {
            return Err(format!(
                "only class declarations are supported, found {keyword}"
            ));
        }
        let name = parser.word()?;
        parser.expect('{')?;
        let mut properties = Vec::new();
        while parser.peek() != Some(&Token::Symbol('}')) {
            let qualifiers = parser.qualifiers()?;
            let type_name = parser.word()?;
            if cim_type(&type_name).is_none() {
                return Err(format!(
                    "class {name}: unsupported property type {type_name}"
                ));
            }
            let property = parser.word()?;
            parser.expect(';')?;
            properties.push(Property {
                cim_type: type_name,
                name: property,
                qualifiers,
            });
        }
        parser.expect('}')?;
        parser.expect(';')?;
        classes.push(Class {
            name,
            qualifiers,
            properties,
        });
    }
    Ok(classes)
}

// --- The BMF structure ------------------------------------------------------------------------

fn utf16z(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn length(bytes: usize) -> u32 {
    u32::try_from(bytes).expect("a binary MOF fits 4 GiB")
}

/// A record: `Length` (of the whole record) then `fields` then `body`.
fn record(fields: &[u32], body: &[u8]) -> Vec<u8> {
    let mut out = u32s(&[length(4 + 4 * fields.len() + body.len())]);
    out.extend(u32s(fields));
    out.extend_from_slice(body);
    out
}

/// A list: `Length` (of the whole list), `Count`, the items.
fn list(items: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = items.concat();
    let mut out = u32s(&[length(8 + body.len()), length(items.len())]);
    out.extend(body);
    out
}

fn qualifier(qualifier: &Qualifier) -> Vec<u8> {
    let name = utf16z(&qualifier.name);
    let (kind, value) = match &qualifier.value {
        QualifierValue::Flag => (QUALIFIER_BOOLEAN, u32s(&[VARIANT_TRUE])),
        QualifierValue::Integer(value) => (QUALIFIER_SINT32, value.to_le_bytes().to_vec()),
        QualifierValue::Text(text) => (QUALIFIER_STRING, utf16z(text)),
    };
    let mut body = name.clone();
    body.extend(value);
    record(&[kind, 0, length(name.len())], &body)
}

fn property(property: &Property) -> Vec<u8> {
    let name = utf16z(&property.name);
    let mut qualifiers = vec![qualifier(&Qualifier {
        name: "CIMTYPE".into(),
        value: QualifierValue::Text(property.cim_type.clone()),
    })];
    qualifiers.extend(property.qualifiers.iter().map(qualifier));
    let mut body = name.clone();
    body.extend(list(&qualifiers));
    let kind = cim_type(&property.cim_type).expect("checked by the parser");
    record(&[kind, 0, NONE, length(name.len())], &body)
}

/// The `__CLASS` system property: the class name as a string value, no qualifiers.
fn class_name_property(class: &str) -> Vec<u8> {
    let name = utf16z("__CLASS");
    let mut body = name.clone();
    body.extend(utf16z(class));
    record(&[QUALIFIER_STRING, 0, length(name.len()), NONE], &body)
}

fn object(class: &Class) -> Vec<u8> {
    let qualifiers = list(&class.qualifiers.iter().map(qualifier).collect::<Vec<_>>());
    // The class name last: readers that count the list's entries as the class's properties
    // (bmfdec does) then see exactly the declared ones, in order.
    let mut properties: Vec<Vec<u8>> = class.properties.iter().map(property).collect();
    properties.push(class_name_property(&class.name));
    let properties = list(&properties);
    let mut data = qualifiers.clone();
    data.extend(&properties);
    let data_length = length(data.len());
    data.extend(list(&[])); // no methods
    record(&[0, length(qualifiers.len()), data_length, 0], &data)
}

/// The decompressed BMF of `classes`.
#[must_use]
pub fn encode(classes: &[Class]) -> Vec<u8> {
    let objects: Vec<u8> = classes.iter().flat_map(object).collect();
    let mut out = b"FOMB".to_vec();
    out.extend(u32s(&[
        length(20 + objects.len()),
        1,
        1,
        length(classes.len()),
    ]));
    out.extend(objects);
    out
}

// --- DS-01 compression ------------------------------------------------------------------------

/// The output bytes between two sector syncs of the DS scheme.
const SECTOR: usize = 512;

/// Bits written least significant first into 16-bit little-endian words.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    buffer: u32,
    count: u32,
}

impl Bits {
    fn put(&mut self, value: u32, bits: u32) {
        self.buffer |= value << self.count;
        self.count += bits;
        while self.count >= 16 {
            let word = u16::try_from(self.buffer & 0xffff).expect("masked");
            self.out.extend_from_slice(&word.to_le_bytes());
            self.buffer >>= 16;
            self.count -= 16;
        }
    }
    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.put(0, 16 - self.count);
        }
        self.out
    }
}

/// `data` compressed in the DS-01 scheme with the BMF header. Every byte is a literal (nine
/// bits: a two-bit tag and seven bits); a sector sync (the 15-bit code `0x7fff`) follows every
/// 512 bytes of output and ends the stream. Valid DS-01, if larger than mofcomp's, which also
/// emits back-references; the resource is a few kilobytes.
#[must_use]
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut bits = Bits::default();
    bits.put(u32::from(u16::from_le_bytes(*b"DS")), 16);
    bits.put(u32::from(u16::from_le_bytes([0, 1])), 16); // version 1
    for (index, &byte) in data.iter().enumerate() {
        if index > 0 && index % SECTOR == 0 {
            bits.put(0x7fff, 15);
        }
        let (tag, low) = if byte < 0x80 {
            (0b10, byte)
        } else {
            (0b01, byte & 0x7f)
        };
        bits.put(tag | (u32::from(low) << 2), 9);
    }
    bits.put(0x7fff, 15);
    let stream = bits.finish();
    let mut out = b"FOMB".to_vec();
    out.extend(u32s(&[1, length(stream.len()), length(data.len())]));
    out.extend(stream);
    out
}

/// The `MOFDATA` resource for a MOF source: parsed, encoded and compressed.
///
/// # Errors
/// The MOF uses something outside the supported subset.
pub fn mof_resource(source: &str) -> Result<Vec<u8>, String> {
    Ok(compress(&encode(&parse_mof(source)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOF: &str = include_str!("../../../wmi/mof/rvscsi.mof");

    // An independent reader: a DS-01 decompressor that also understands back-references (as
    // mofcomp writes them), and a BMF walker that rebuilds the classes from the bytes.

    struct Reader<'a> {
        words: &'a [u8],
        at: usize,
        buffer: u64,
        count: u32,
    }

    impl Reader<'_> {
        fn bits(&mut self, n: u32) -> u32 {
            while self.count < n {
                let word = self
                    .words
                    .get(self.at..self.at + 2)
                    .map_or(0, |w| u16::from_le_bytes([w[0], w[1]]));
                self.at += 2;
                self.buffer |= u64::from(word) << self.count;
                self.count += 16;
            }
            let value = u32::try_from(self.buffer & ((1 << n) - 1)).unwrap();
            self.buffer >>= n;
            self.count -= n;
            value
        }
        /// A match length: a unary prefix of zeros selecting a range, then that many bits.
        fn length(&mut self) -> usize {
            for (zeros, base) in [
                (0, 3),
                (1, 4),
                (2, 6),
                (3, 10),
                (4, 18),
                (5, 34),
                (6, 66),
                (7, 130),
            ] {
                if self.bits(1) == 1 {
                    return base + self.bits(zeros) as usize;
                }
            }
            assert_eq!(self.bits(1), 1, "length prefix too long");
            258 + self.bits(8) as usize
        }
    }

    fn decompress(resource: &[u8]) -> Vec<u8> {
        assert_eq!(&resource[..4], b"FOMB");
        let word = |i: usize| u32::from_le_bytes(resource[i..i + 4].try_into().unwrap());
        assert_eq!(word(4), 1);
        assert_eq!(word(8) as usize, resource.len() - 16);
        let size = word(12) as usize;
        let mut reader = Reader {
            words: &resource[16..],
            at: 0,
            buffer: 0,
            count: 0,
        };
        assert_eq!(reader.bits(16), 0x5344);
        assert_eq!(reader.bits(16), 0x0100);
        let mut out: Vec<u8> = Vec::new();
        while out.len() < size {
            let offset = match reader.bits(2) {
                0 => reader.bits(6) as usize,
                1 => {
                    out.push(u8::try_from(reader.bits(7)).unwrap() | 0x80);
                    continue;
                }
                2 => {
                    out.push(u8::try_from(reader.bits(7)).unwrap());
                    continue;
                }
                _ if reader.bits(1) == 0 => reader.bits(8) as usize + 64,
                _ => reader.bits(12) as usize + 320,
            };
            if offset == 0x113f {
                assert_eq!(out.len() % 512, 0, "a sector sync off a sector boundary");
                continue;
            }
            let length = reader.length() - 1;
            for _ in 0..length {
                out.push(out[out.len() - offset]);
            }
        }
        assert_eq!(reader.bits(3), 7, "the end sync");
        assert_eq!(reader.bits(12) + 320, 0x113f, "the end sync");
        out
    }

    fn u32_at(data: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
    }

    fn string_at(data: &[u8]) -> String {
        let units: Vec<u16> = data
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16(&units).unwrap()
    }

    /// A qualifier list at `data`: the qualifiers and the list's length.
    fn read_qualifiers(data: &[u8]) -> (Vec<Qualifier>, usize) {
        let list_length = u32_at(data, 0) as usize;
        let count = u32_at(data, 4);
        let mut at = 8;
        let mut qualifiers = Vec::new();
        for _ in 0..count {
            let length = u32_at(data, at) as usize;
            let kind = u32_at(data, at + 4);
            assert_eq!(u32_at(data, at + 8), 0, "OffsetName");
            let value_offset = u32_at(data, at + 12) as usize;
            let record = &data[at..at + length];
            let name = string_at(&record[16..16 + value_offset]);
            let value = &record[16 + value_offset..];
            let value = match kind {
                0x0b => {
                    assert_eq!(value, VARIANT_TRUE.to_le_bytes());
                    QualifierValue::Flag
                }
                0x03 => QualifierValue::Integer(i32::from_le_bytes(value.try_into().unwrap())),
                0x08 => QualifierValue::Text(string_at(value)),
                other => panic!("qualifier type {other:#x}"),
            };
            qualifiers.push(Qualifier { name, value });
            at += length;
        }
        assert_eq!(at, list_length);
        (qualifiers, list_length)
    }

    fn read_bmf(data: &[u8]) -> Vec<Class> {
        assert_eq!(&data[..4], b"FOMB");
        assert_eq!(u32_at(data, 4) as usize, data.len());
        assert_eq!((u32_at(data, 8), u32_at(data, 12)), (1, 1));
        let mut at = 20;
        let mut classes = Vec::new();
        for _ in 0..u32_at(data, 16) {
            let object = &data[at..at + u32_at(data, at) as usize];
            assert_eq!(u32_at(object, 4), 0, "OffsetQualifierList");
            let property_list = u32_at(object, 8) as usize;
            let method_list = u32_at(object, 12) as usize;
            assert_eq!(u32_at(object, 16), 0, "a class, not an instance");
            let body = &object[20..];
            let (qualifiers, qualifier_length) = read_qualifiers(body);
            assert_eq!(qualifier_length, property_list);
            let properties_data = &body[property_list..method_list];
            assert_eq!(u32_at(properties_data, 0) as usize, properties_data.len());
            let mut name = None;
            let mut properties = Vec::new();
            let mut p = 8;
            for _ in 0..u32_at(properties_data, 4) {
                let record = &properties_data[p..p + u32_at(properties_data, p) as usize];
                let kind = u32_at(record, 4);
                let value_offset = u32_at(record, 12);
                let qualifier_offset = u32_at(record, 16);
                if qualifier_offset == NONE {
                    let value_offset = value_offset as usize;
                    assert_eq!(string_at(&record[20..20 + value_offset]), "__CLASS");
                    name = Some(string_at(&record[20 + value_offset..]));
                } else {
                    assert_eq!(value_offset, NONE);
                    let qualifier_offset = qualifier_offset as usize;
                    let property_name = string_at(&record[20..20 + qualifier_offset]);
                    let (mut qualifiers, length) =
                        read_qualifiers(&record[20 + qualifier_offset..]);
                    assert_eq!(20 + qualifier_offset + length, record.len());
                    let cim = qualifiers.remove(0);
                    assert_eq!(cim.name, "CIMTYPE");
                    let QualifierValue::Text(cim_type) = cim.value else {
                        panic!("CIMTYPE is a string")
                    };
                    assert_eq!(super::cim_type(&cim_type), Some(kind));
                    properties.push(Property {
                        cim_type,
                        name: property_name,
                        qualifiers,
                    });
                }
                p += record.len();
            }
            assert_eq!(p, properties_data.len());
            assert_eq!(&body[method_list..], &u32s(&[8, 0])[..], "no methods");
            classes.push(Class {
                name: name.expect("__CLASS"),
                qualifiers,
                properties,
            });
            at += object.len();
        }
        assert_eq!(at, data.len());
        classes
    }

    #[test]
    fn the_mof_parses_into_its_two_classes() {
        let classes = parse_mof(MOF).unwrap();
        let names: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Rvscsi_QueueStatistics", "Rvscsi_AdapterLimits"]);
        let statistics = &classes[0];
        assert_eq!(statistics.properties.len(), 9);
        assert!(statistics.qualifiers.contains(&Qualifier {
            name: "Locale".into(),
            value: QualifierValue::Text("MS\\0x409".into())
        }));
        assert!(statistics.qualifiers.contains(&Qualifier {
            name: "guid".into(),
            value: QualifierValue::Text("{915F210C-F859-4179-A298-53324462913F}".into())
        }));
        let queue_size = &statistics.properties[3];
        assert_eq!(
            (queue_size.cim_type.as_str(), queue_size.name.as_str()),
            ("uint32", "QueueSize")
        );
        assert_eq!(
            queue_size.qualifiers[0],
            Qualifier {
                name: "WmiDataId".into(),
                value: QualifierValue::Integer(2)
            }
        );
        assert_eq!(classes[1].properties.len(), 16);
    }

    #[test]
    fn the_resource_decompresses_and_decodes_to_the_mof_classes() {
        let classes = parse_mof(MOF).unwrap();
        let resource = mof_resource(MOF).unwrap();
        let data = decompress(&resource);
        assert_eq!(data, encode(&classes));
        assert!(data.len() > 512, "the syncs between sectors are exercised");
        assert_eq!(read_bmf(&data), classes);
    }

    #[test]
    fn compression_round_trips_every_byte_value_across_sectors() {
        let data: Vec<u8> = (0..2000_u32).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(decompress(&compress(&data)), data);
        assert_eq!(decompress(&compress(&[])), Vec::<u8>::new());
        assert_eq!(decompress(&compress(&[0; 512])), vec![0; 512]);
    }

    #[test]
    fn constructs_outside_the_subset_are_refused() {
        for (source, complaint) in [
            ("instance of X { };", "only class declarations"),
            ("class X { real32 Y; };", "unsupported property type real32"),
            ("[Q(1.5)] class X { };", "unexpected character"),
            ("class X { uint32 Y[]; };", "expected ';'"),
            ("class X { uint32 Y; }", "ends early"),
            ("[Q(\"a)] class X {};", "unterminated"),
        ] {
            let error = parse_mof(source).unwrap_err();
            assert!(error.contains(complaint), "{source}: {error}");
        }
    }
}
