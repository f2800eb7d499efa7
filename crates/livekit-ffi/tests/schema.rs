//! The hand-written messages of `src/proto.rs` against the schema `liblivekit_ffi.so` was built
//! with: every declared field must have the library's number, type and label, every oneof variant
//! its number and type, every enum value its number. A mismatch fails naming the field.
//!
//! The schema is the `FileDescriptorSet` that `scripts/setup_livekit.sh` extracts from the wheel:
//! `$AVS_LIVEKIT_FDS`, else `<repo>/.setup/livekit/ffi.fds` where `<repo>` is `$AVS_REPO_ROOT` or
//! two levels above this crate (its place in the workspace, `crates/livekit-ffi`). The Rust side is
//! read from the source with `syn`: the `#[prost(...)]` attributes are exactly what prost encodes.

use std::collections::HashMap;
use std::path::PathBuf;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

fn repo_root() -> PathBuf {
    match std::env::var_os("AVS_REPO_ROOT") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

fn fds_path() -> PathBuf {
    match std::env::var_os("AVS_LIVEKIT_FDS") {
        Some(path) => PathBuf::from(path),
        None => repo_root().join(".setup/livekit/ffi.fds"),
    }
}

fn load_schema() -> Schema {
    let path = fds_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the library's schema {}: {e}; run `make setup` (scripts/setup_livekit.sh) \
             or set AVS_LIVEKIT_FDS",
            path.display()
        )
    });
    let set = FileDescriptorSet::decode(bytes.as_slice()).expect("ffi.fds is a FileDescriptorSet");
    Schema::new(&set)
}

fn rust_source() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/proto.rs");
    std::fs::read_to_string(&path).expect("src/proto.rs is readable")
}

#[test]
fn hand_written_messages_match_the_library_schema() {
    let schema = load_schema();
    let problems = check(&schema, &rust_source());
    assert!(
        problems.is_empty(),
        "src/proto.rs disagrees with {}:\n  {}",
        fds_path().display(),
        problems.join("\n  ")
    );
}

/// The check must be able to fail, and say where.
#[test]
fn a_wrong_number_type_or_label_is_reported_by_field() {
    let schema = load_schema();
    let source = rust_source();
    let cases = [
        // FfiRequest.ready_for_room_event is 83 (its response is 82).
        ("#[prost(message, tag = \"83\")]", "#[prost(message, tag = \"82\")]", "FfiRequest.ready_for_room_event"),
        (
            "#[prost(int64, required, tag = \"3\")]\n    pub timestamp_us: i64,",
            "#[prost(uint64, required, tag = \"3\")]\n    pub timestamp_us: i64,",
            "CaptureVideoFrameRequest.timestamp_us",
        ),
        (
            "#[prost(uint64, optional, tag = \"4\")]\n    pub request_async_id: Option<u64>,\n}\n\n#[derive(Clone, PartialEq, prost::Message)]\npub struct RoomOptions",
            "#[prost(uint64, required, tag = \"4\")]\n    pub request_async_id: Option<u64>,\n}\n\n#[derive(Clone, PartialEq, prost::Message)]\npub struct RoomOptions",
            "ConnectRequest.request_async_id",
        ),
        ("    RoomDeleted = 5,", "    RoomDeleted = 6,", "DisconnectReason.RoomDeleted"),
    ];
    for (original, tampered, field) in cases {
        assert_eq!(
            source.matches(original).count(),
            1,
            "the test's anchor {original:?} must be unique"
        );
        let problems = check(&schema, &source.replacen(original, tampered, 1));
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "tampering with {field} was not reported; got {problems:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The library's side
// ---------------------------------------------------------------------------------------------

struct Schema {
    /// Full name without the leading dot (`livekit.proto.ConnectCallback.Result`) → message.
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, EnumDescriptorProto>,
}

impl Schema {
    fn new(set: &FileDescriptorSet) -> Self {
        let mut schema = Schema {
            messages: HashMap::new(),
            enums: HashMap::new(),
        };
        for file in &set.file {
            let package = file.package();
            for e in &file.enum_type {
                schema
                    .enums
                    .insert(format!("{package}.{}", e.name()), e.clone());
            }
            for m in &file.message_type {
                schema.add_message(package, m);
            }
        }
        schema
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for e in &message.enum_type {
            self.enums.insert(format!("{name}.{}", e.name()), e.clone());
        }
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        self.messages.insert(name, message.clone());
    }

    /// The full name whose path matches `rust_path` the way prost-build names things
    /// (`connect_callback::Result` ↔ `ConnectCallback.Result`, `RoomEos` ↔ `RoomEOS`).
    fn find<'a, T>(
        map: &'a HashMap<String, T>,
        rust_path: &[String],
    ) -> Option<(&'a String, &'a T)> {
        let wanted: Vec<String> = rust_path.iter().map(|s| normalize(s)).collect();
        map.iter().find(|(full, _)| {
            let segments: Vec<String> = full
                .trim_start_matches("livekit.proto.")
                .split('.')
                .map(normalize)
                .collect();
            segments == wanted
        })
    }
}

/// Case and underscores do not matter when pairing names.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_uppercase)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The Rust side
// ---------------------------------------------------------------------------------------------

/// One `#[prost(...)]` attribute: bare words (`uint64`, `required`) and `key = "value"` pairs.
#[derive(Default, Debug)]
struct ProstAttr {
    words: Vec<String>,
    pairs: HashMap<String, String>,
}

fn prost_attr(attrs: &[syn::Attribute]) -> Option<ProstAttr> {
    let attr = attrs.iter().find(|a| a.path().is_ident("prost"))?;
    let mut parsed = ProstAttr::default();
    attr.parse_nested_meta(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        if meta.input.peek(syn::Token![=]) {
            let value: syn::LitStr = meta.value()?.parse()?;
            parsed.pairs.insert(key, value.value());
        } else {
            parsed.words.push(key);
        }
        Ok(())
    })
    .expect("a #[prost(...)] attribute parses");
    Some(parsed)
}

fn derives(attrs: &[syn::Attribute], name: &str) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| {
            let mut found = false;
            let _ = a.parse_nested_meta(|meta| {
                if meta.path.segments.last().is_some_and(|s| s.ident == name) {
                    found = true;
                }
                Ok(())
            });
            found
        })
}

/// The module path of the type named in `ty` (inside `Option<..>`/`Vec<..>`), resolved from the
/// module `scope` it is written in: `super::X` in `connect_callback` is `X`, a bare `Result` there
/// is `connect_callback::Result`.
fn type_path(ty: &syn::Type, scope: &[String]) -> Vec<String> {
    let syn::Type::Path(path) = ty else {
        return vec![];
    };
    if let Some(segment) = path.path.segments.last() {
        if segment.ident == "Option" || segment.ident == "Vec" {
            if let syn::PathArguments::AngleBracketed(args) = &segment.arguments {
                if let Some(syn::GenericArgument::Type(inner)) = args.args.first() {
                    return type_path(inner, scope);
                }
            }
        }
    }
    let mut resolved = scope.to_vec();
    for segment in &path.path.segments {
        match segment.ident.to_string().as_str() {
            "super" => {
                resolved.pop();
            }
            "crate" => resolved.clear(),
            "self" => {}
            name => resolved.push(name.to_string()),
        }
    }
    resolved
}

/// Everything `src/proto.rs` declares, by Rust path (`["connect_callback", "Result"]`).
#[derive(Default)]
struct RustItems {
    messages: Vec<(Vec<String>, syn::ItemStruct)>,
    oneofs: HashMap<Vec<String>, syn::ItemEnum>,
    enums: Vec<(Vec<String>, syn::ItemEnum)>,
}

fn collect(items: &[syn::Item], scope: &[String], out: &mut RustItems) {
    for item in items {
        match item {
            syn::Item::Struct(s) if derives(&s.attrs, "Message") => {
                let mut path = scope.to_vec();
                path.push(s.ident.to_string());
                out.messages.push((path, s.clone()));
            }
            syn::Item::Enum(e) if derives(&e.attrs, "Oneof") => {
                let mut path = scope.to_vec();
                path.push(e.ident.to_string());
                out.oneofs.insert(path, e.clone());
            }
            syn::Item::Enum(e) if derives(&e.attrs, "Enumeration") => {
                let mut path = scope.to_vec();
                path.push(e.ident.to_string());
                out.enums.push((path, e.clone()));
            }
            syn::Item::Mod(m) => {
                if let Some((_, content)) = &m.content {
                    let mut inner = scope.to_vec();
                    inner.push(m.ident.to_string());
                    collect(content, &inner, out);
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The comparison
// ---------------------------------------------------------------------------------------------

fn check(schema: &Schema, source: &str) -> Vec<String> {
    let file = syn::parse_file(source).expect("src/proto.rs parses");
    let mut rust = RustItems::default();
    collect(&file.items, &[], &mut rust);
    let mut problems = Vec::new();
    assert!(
        rust.messages.len() > 50,
        "src/proto.rs was not read (found {} messages)",
        rust.messages.len()
    );

    for (path, item) in &rust.messages {
        let Some((full, descriptor)) = Schema::find(&schema.messages, path) else {
            problems.push(format!(
                "{}: no such message in the library's schema",
                path.join("::")
            ));
            continue;
        };
        let message = full.trim_start_matches("livekit.proto.");
        let syn::Fields::Named(fields) = &item.fields else {
            continue;
        };
        for field in &fields.named {
            let rust_name = field
                .ident
                .as_ref()
                .map(|i| i.to_string().trim_start_matches("r#").to_string())
                .unwrap_or_default();
            let Some(attr) = prost_attr(&field.attrs) else {
                problems.push(format!("{message}.{rust_name}: no #[prost] attribute"));
                continue;
            };
            if let Some(oneof) = attr.pairs.get("oneof") {
                check_oneof(descriptor, message, oneof, &attr, &rust, &mut problems);
                continue;
            }
            let Some(expected) = descriptor.field.iter().find(|f| f.name() == rust_name) else {
                problems.push(format!(
                    "{message}.{rust_name}: no such field in the library's schema"
                ));
                continue;
            };
            let scope = &path[..path.len() - 1];
            check_field(
                &format!("{message}.{rust_name}"),
                expected,
                &attr,
                &type_path(&field.ty, scope),
                &mut problems,
            );
        }
    }

    for (path, item) in &rust.enums {
        let Some((full, descriptor)) = Schema::find(&schema.enums, path) else {
            problems.push(format!(
                "{}: no such enum in the library's schema",
                path.join("::")
            ));
            continue;
        };
        let name = full.trim_start_matches("livekit.proto.");
        for variant in &item.variants {
            let Some((
                _,
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(value),
                    ..
                }),
            )) = &variant.discriminant
            else {
                problems.push(format!("{name}.{}: no explicit number", variant.ident));
                continue;
            };
            let number: i32 = value.base10_parse().unwrap_or(i32::MIN);
            let wanted = normalize(&variant.ident.to_string());
            let stripped = format!("{}{wanted}", normalize(descriptor.name()));
            match descriptor
                .value
                .iter()
                .find(|v| normalize(v.name()) == wanted || normalize(v.name()) == stripped)
            {
                Some(v) if v.number() == number => {}
                Some(v) => problems.push(format!(
                    "{name}.{}: number {number} in Rust, {} ({}) in the library",
                    variant.ident,
                    v.number(),
                    v.name()
                )),
                None => problems.push(format!(
                    "{name}.{}: no such value in the library's schema",
                    variant.ident
                )),
            }
        }
    }
    problems
}

fn check_field(
    what: &str,
    expected: &prost_types::FieldDescriptorProto,
    attr: &ProstAttr,
    rust_type: &[String],
    problems: &mut Vec<String>,
) {
    let tag: Option<i32> = attr.pairs.get("tag").and_then(|t| t.parse().ok());
    if tag != Some(expected.number()) {
        problems.push(format!(
            "{what}: number {tag:?} in Rust, {} in the library",
            expected.number()
        ));
    }
    // A map is a repeated message of the map's own `<Name>Entry` type in the schema.
    if let Some(map) = attr.pairs.get("map") {
        let entry = expected.type_name().rsplit('.').next().unwrap_or_default();
        if expected.label() != Label::Repeated
            || expected.r#type() != Type::Message
            || !entry.ends_with("Entry")
        {
            problems.push(format!(
                "{what}: map<{map}> in Rust, {:?} {:?} {} in the library",
                expected.label(),
                expected.r#type(),
                expected.type_name()
            ));
        }
        return;
    }
    let label = if attr.words.iter().any(|w| w == "required") {
        Some(Label::Required)
    } else if attr.words.iter().any(|w| w == "repeated") {
        Some(Label::Repeated)
    } else if attr.words.iter().any(|w| w == "optional") {
        Some(Label::Optional)
    } else {
        None
    };
    if label != Some(expected.label()) {
        problems.push(format!(
            "{what}: label {label:?} in Rust, {:?} in the library",
            expected.label()
        ));
    }
    check_type(what, expected, attr, rust_type, problems);
}

fn check_type(
    what: &str,
    expected: &prost_types::FieldDescriptorProto,
    attr: &ProstAttr,
    rust_type: &[String],
    problems: &mut Vec<String>,
) {
    let type_name_tail = |type_name: &str| -> Vec<String> {
        type_name
            .trim_start_matches(".livekit.proto.")
            .split('.')
            .map(normalize)
            .collect()
    };
    if let Some(enumeration) = attr.pairs.get("enumeration") {
        let rust: Vec<String> = enumeration.split("::").map(normalize).collect();
        if expected.r#type() != Type::Enum || type_name_tail(expected.type_name()) != rust {
            problems.push(format!(
                "{what}: enumeration {enumeration} in Rust, {:?} {} in the library",
                expected.r#type(),
                expected.type_name()
            ));
        }
        return;
    }
    if attr.words.iter().any(|w| w == "message") {
        let rust: Vec<String> = rust_type.iter().map(|s| normalize(s)).collect();
        if expected.r#type() != Type::Message || type_name_tail(expected.type_name()) != rust {
            problems.push(format!(
                "{what}: message {} in Rust, {:?} {} in the library",
                rust_type.join("::"),
                expected.r#type(),
                expected.type_name()
            ));
        }
        return;
    }
    let scalars = [
        ("double", Type::Double),
        ("float", Type::Float),
        ("int64", Type::Int64),
        ("uint64", Type::Uint64),
        ("int32", Type::Int32),
        ("fixed64", Type::Fixed64),
        ("fixed32", Type::Fixed32),
        ("bool", Type::Bool),
        ("string", Type::String),
        ("bytes", Type::Bytes),
        ("uint32", Type::Uint32),
        ("sfixed32", Type::Sfixed32),
        ("sfixed64", Type::Sfixed64),
        ("sint32", Type::Sint32),
        ("sint64", Type::Sint64),
    ];
    // `bytes` is also written `bytes = "vec"` (or `"bytes"`), a pair rather than a word.
    let rust = scalars.iter().find(|(word, _)| {
        attr.words.iter().any(|w| w == word)
            || (*word == "bytes" && attr.pairs.contains_key("bytes"))
    });
    match rust {
        Some((_, t)) if *t == expected.r#type() => {}
        _ => problems.push(format!(
            "{what}: type {:?} in Rust, {:?} in the library",
            rust.map(|(w, _)| *w),
            expected.r#type()
        )),
    }
}

fn check_oneof(
    descriptor: &DescriptorProto,
    message: &str,
    oneof: &str,
    attr: &ProstAttr,
    rust: &RustItems,
    problems: &mut Vec<String>,
) {
    let path: Vec<String> = oneof.split("::").map(str::to_string).collect();
    let Some(item) = rust.oneofs.get(&path) else {
        problems.push(format!(
            "{message}: oneof enum {oneof} not found in src/proto.rs"
        ));
        return;
    };
    let oneof_name = path.last().map(|s| normalize(s)).unwrap_or_default();
    let Some(oneof_index) = descriptor
        .oneof_decl
        .iter()
        .position(|o| normalize(o.name()) == oneof_name)
    else {
        problems.push(format!(
            "{message}: no oneof {oneof} in the library's schema"
        ));
        return;
    };
    let mut declared: Vec<i32> = attr
        .pairs
        .get("tags")
        .map(|t| t.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_default();
    let mut variant_tags = Vec::new();
    for variant in &item.variants {
        let Some(variant_attr) = prost_attr(&variant.attrs) else {
            problems.push(format!(
                "{message}.{}: no #[prost] attribute",
                variant.ident
            ));
            continue;
        };
        let tag: Option<i32> = variant_attr.pairs.get("tag").and_then(|t| t.parse().ok());
        variant_tags.extend(tag);
        // The variant is prost-build's CamelCase of the field name.
        let Some(expected) = descriptor
            .field
            .iter()
            .find(|f| normalize(f.name()) == normalize(&variant.ident.to_string()))
        else {
            problems.push(format!(
                "{message}.{}: no such field in the library's schema",
                variant.ident
            ));
            continue;
        };
        let what = format!("{message}.{}", expected.name());
        if expected.oneof_index != Some(oneof_index as i32) {
            problems.push(format!(
                "{what}: not a member of oneof {oneof} in the library"
            ));
        }
        let rust_type = match &variant.fields {
            syn::Fields::Unnamed(f) => f
                .unnamed
                .first()
                .map(|f| type_path(&f.ty, &path[..path.len() - 1]))
                .unwrap_or_default(),
            _ => vec![],
        };
        // Oneof members are `optional` in a descriptor; prost's variant attribute has no label.
        let mut with_label = ProstAttr {
            words: variant_attr.words.clone(),
            pairs: variant_attr.pairs.clone(),
        };
        with_label.words.push("optional".into());
        check_field(&what, expected, &with_label, &rust_type, problems);
    }
    declared.sort_unstable();
    variant_tags.sort_unstable();
    if declared != variant_tags {
        problems.push(format!(
            "{message}.{}: tags = {declared:?} on the field, but the variants have {variant_tags:?}",
            path.last().map(String::as_str).unwrap_or_default()
        ));
    }
}
