//! The credential family catalogue: which token shapes belong to which vendor, and where
//! that vendor's clients put them (headers, `Authorization` schemes, query parameters,
//! cookies, URL paths).
//!
//! The facts live in `families.toml`, a data file reviewed like code, so adding a family
//! is a one-entry change with its own generated test vector rather than a new branch in
//! the detector. The file is embedded at build time and parsed once; a unit test proves
//! it parses and that every family's pattern compiles.

use std::{collections::HashMap, sync::LazyLock};

use regex::{Regex, RegexSet};
use serde::Deserialize;

use super::detect::Class;

const SOURCE: &str = include_str!("families.toml");

/// How long a family's credentials live, as its vendor documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifetime {
    Static,
    ShortLived,
}

impl Lifetime {
    pub fn class(self) -> Class {
        match self {
            Self::Static => Class::Static,
            Self::ShortLived => Class::ShortLived { lifetime_seconds: None, remaining_seconds: None },
        }
    }
}

/// Where a credential travels in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    Header,
    Scheme,
    Query,
    Cookie,
}

/// One family as written in `families.toml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FamilySpec {
    pub name: String,
    pub vendor: String,
    pub lifetime: Lifetime,
    /// Literal starts that on their own say "this family", wherever the token turns up.
    /// Families without one (hex keys, UUIDs) are only named where their own clients
    /// put them.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// The documented shape of the whole token (anchored when compiled). A named group
    /// `id` marks a non-secret identifier inside it.
    pub pattern: String,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub schemes: Vec<String>,
    #[serde(default)]
    pub query: Vec<String>,
    #[serde(default)]
    pub cookies: Vec<String>,
    /// A URL path that carries the secret (webhooks): groups `secret` and optionally `id`.
    #[serde(default)]
    pub path: Option<String>,
    /// What the `id` group is, for people reading `sigil-agent families`.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Handled by a dedicated detector (SigV4): listed for users, not matched here.
    #[serde(default)]
    pub detector: Option<String>,
    /// The prefix alone names the family, whatever follows: for long, unambiguous
    /// prefixes of vendors that have changed token lengths before.
    #[serde(default)]
    pub prefix_suffices: bool,
    /// The full shape is distinctive enough to name the family wherever it turns up,
    /// though it has no literal prefix (`…\.atlasv1\.…`, `…-us12`).
    #[serde(default)]
    pub anywhere: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    generic: Generic,
    family: Vec<FamilySpec>,
}

/// Places whose value is a credential whatever its shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Generic {
    headers: Vec<String>,
    query: Vec<String>,
    cookies: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("families.toml does not parse: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("family {family}: bad pattern: {source}")]
    Pattern { family: String, source: Box<regex::Error> },
    #[error("family {family}: {problem}")]
    Invalid { family: String, problem: String },
}

pub struct Family {
    pub spec: FamilySpec,
    pattern: Regex,
    path: Option<Regex>,
}

impl Family {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn pattern(&self) -> &Regex {
        &self.pattern
    }

    pub fn path_pattern(&self) -> Option<&Regex> {
        self.path.as_ref()
    }

    pub fn class(&self) -> Class {
        self.spec.lifetime.class()
    }

    /// The non-secret identifier a token of this family carries, if any.
    pub fn identifier_in(&self, token: &str) -> Option<String> {
        self.pattern.captures(token)?.name("id").map(|m| m.as_str().to_owned())
    }

    /// The names of the places of this kind the family's clients use.
    fn names(&self, placement: Placement) -> &[String] {
        match placement {
            Placement::Header => &self.spec.headers,
            Placement::Scheme => &self.spec.schemes,
            Placement::Query => &self.spec.query,
            Placement::Cookie => &self.spec.cookies,
        }
    }

    /// Length of the longest documented prefix `token` starts with, if the rest of the
    /// token also fits (or the prefix alone suffices).
    fn longest_prefix(&self, token: &str) -> Option<usize> {
        let len = self.spec.prefixes.iter().filter(|p| token.len() > p.len() && token.starts_with(p.as_str())).map(String::len).max()?;
        (self.spec.prefix_suffices || self.pattern.is_match(token)).then_some(len)
    }
}

/// A credential found in a URL path: the secret part and the family's identifier.
pub struct PathCredential<'a> {
    pub family: &'a Family,
    pub secret: &'a str,
    pub id: Option<&'a str>,
}

#[derive(Default)]
pub struct Catalogue {
    families: Vec<Family>,
    /// Matchable families by the first byte of each documented prefix (an empty prefix
    /// in every slot): a bearer token is compared with its first byte's few prefixes, not
    /// with all of them. Every request of a keep-alive client asks.
    by_first_byte: Vec<Vec<usize>>,
    /// Matchable families by each place they list, (placement, lower-cased name): one
    /// lookup per header instead of a pass over every family's lists.
    by_place: HashMap<(Placement, String), Vec<usize>>,
    /// Full-shape patterns of the families that have a prefix, for values found in
    /// places nobody listed (a `ghp_` token in a custom header).
    shapes: Option<RegexSet>,
    shaped: Vec<usize>,
    generic: Generic,
}

/// What a value in a credential-bearing place turned out to be.
pub enum Verdict<'a> {
    Family(&'a Family),
    /// A credential place, but no family claims the value.
    Generic,
}

static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| {
    Catalogue::parse(SOURCE).unwrap_or_else(|e| {
        // A unit test parses the embedded file, so this only happens to a broken build;
        // detection then falls back to the generic rules instead of stopping the agent.
        tracing::error!("credential family catalogue unusable: {e}");
        Catalogue::default()
    })
});

/// The embedded catalogue.
pub fn catalogue() -> &'static Catalogue {
    &CATALOGUE
}

impl Catalogue {
    pub fn parse(source: &str) -> Result<Self, CatalogueError> {
        let file: File = toml::from_str(source)?;
        let mut families = Vec::with_capacity(file.family.len());
        for spec in file.family {
            let compile = |p: &str| Regex::new(&format!("^(?:{p})$")).map_err(|e| CatalogueError::Pattern { family: spec.name.clone(), source: Box::new(e) });
            let pattern = compile(&spec.pattern)?;
            let path = match &spec.path {
                Some(p) => {
                    let re = Regex::new(p).map_err(|e| CatalogueError::Pattern { family: spec.name.clone(), source: Box::new(e) })?;
                    if !re.capture_names().flatten().any(|n| n == "secret") {
                        return Err(CatalogueError::Invalid { family: spec.name.clone(), problem: "path pattern has no `secret` group".into() });
                    }
                    Some(re)
                }
                None => None,
            };
            if families.iter().any(|f: &Family| f.spec.name == spec.name) {
                return Err(CatalogueError::Invalid { family: spec.name.clone(), problem: "listed twice".into() });
            }
            families.push(Family { spec, pattern, path });
        }
        let shaped: Vec<usize> = families
            .iter()
            .enumerate()
            .filter(|(_, f)| (!f.spec.prefixes.is_empty() || f.spec.anywhere) && f.spec.detector.is_none())
            .map(|(i, _)| i)
            .collect();
        let shapes = RegexSet::new(shaped.iter().filter_map(|&i| families.get(i)).map(|f| f.pattern.as_str()))
            .map_err(|e| CatalogueError::Pattern { family: "(all)".into(), source: Box::new(e) })?;
        let mut by_first_byte = vec![Vec::new(); 256];
        let mut by_place: HashMap<(Placement, String), Vec<usize>> = HashMap::new();
        for (i, f) in families.iter().enumerate().filter(|(_, f)| f.spec.detector.is_none()) {
            for p in &f.spec.prefixes {
                let slots: Vec<&mut Vec<usize>> = match p.as_bytes().first() {
                    Some(&b) => by_first_byte.get_mut(usize::from(b)).into_iter().collect(),
                    None => by_first_byte.iter_mut().collect(),
                };
                for slot in slots.into_iter().filter(|s| s.last() != Some(&i)) {
                    slot.push(i);
                }
            }
            for placement in [Placement::Header, Placement::Scheme, Placement::Query, Placement::Cookie] {
                for name in f.names(placement) {
                    let listed = by_place.entry((placement, name.to_ascii_lowercase())).or_default();
                    if listed.last() != Some(&i) {
                        listed.push(i);
                    }
                }
            }
        }
        Ok(Self { families, by_first_byte, by_place, shapes: Some(shapes), shaped, generic: file.generic })
    }

    pub fn families(&self) -> &[Family] {
        &self.families
    }

    fn matchable(&self) -> impl Iterator<Item = &Family> {
        self.families.iter().filter(|f| f.spec.detector.is_none())
    }

    /// The family a token belongs to by its documented prefix (the longest wins), for
    /// tokens whose place already says "credential" (a bearer token, a listed header).
    pub fn by_prefix(&self, token: &str) -> Option<&Family> {
        let first = usize::from(*token.as_bytes().first()?);
        self.by_first_byte
            .get(first)?
            .iter()
            .filter_map(|&i| self.families.get(i))
            .filter_map(|f| f.longest_prefix(token).map(|len| (len, f)))
            .max_by_key(|(len, _)| *len)
            .map(|(_, f)| f)
    }

    /// The distinctive family (prefixed, or marked `anywhere`) whose full documented shape
    /// `value` has: strict, for values found in places that do not on their own mean
    /// "credential".
    pub fn by_shape(&self, value: &str) -> Option<&Family> {
        let shapes = self.shapes.as_ref()?;
        shapes.matches(value).iter().filter_map(|i| self.shaped.get(i).and_then(|&f| self.families.get(f))).max_by_key(|f| f.longest_prefix(value).unwrap_or(0))
    }

    fn generic_names(&self, placement: Placement) -> &[String] {
        match placement {
            Placement::Header => &self.generic.headers,
            Placement::Query => &self.generic.query,
            Placement::Cookie => &self.generic.cookies,
            Placement::Scheme => &[],
        }
    }

    /// Is `name` (a header, scheme, query parameter or cookie) a place where a credential
    /// goes, and if so which family is `value`? `None`: not a credential.
    ///
    /// A family that lists the place and whose shape matches wins; then any documented
    /// prefix; then, for a place only one vendor uses (`X-Vault-Token`, `SSWS`), that
    /// vendor's family. A value with a family's full shape counts even in a place nobody
    /// listed.
    pub fn classify(&self, placement: Placement, name: &str, value: &str) -> Option<Verdict<'_>> {
        let listed: Vec<&Family> =
            self.by_place.get(&(placement, name.to_ascii_lowercase())).into_iter().flatten().filter_map(|&i| self.families.get(i)).collect();
        if let Some(f) = listed.iter().find(|f| f.pattern.is_match(value)) {
            return Some(Verdict::Family(f));
        }
        let generic = self.generic_names(placement).iter().any(|n| n.eq_ignore_ascii_case(name));
        if listed.is_empty() && !generic {
            return self.by_shape(value).map(Verdict::Family);
        }
        if let Some(f) = self.by_prefix(value) {
            return Some(Verdict::Family(f));
        }
        // Header and scheme names are vendors' own words; query and cookie names
        // (`key`, `token`) are everybody's, so there only the value's shape can name it.
        let vendor_word = matches!(placement, Placement::Header | Placement::Scheme);
        match listed.as_slice() {
            [first, rest @ ..] if vendor_word && !generic && rest.iter().all(|f| f.spec.vendor == first.spec.vendor) => Some(Verdict::Family(first)),
            _ if generic || vendor_word => Some(Verdict::Generic),
            _ => None,
        }
    }

    /// Credentials carried in a URL path (webhook URLs).
    pub fn in_path<'a>(&'a self, path: &'a str) -> impl Iterator<Item = PathCredential<'a>> + 'a {
        self.matchable().filter_map(|f| f.path.as_ref().map(|re| (f, re))).flat_map(move |(f, re)| {
            re.captures_iter(path)
                .filter_map(move |c| Some(PathCredential { family: f, secret: c.name("secret")?.as_str(), id: c.name("id").map(|m| m.as_str()) }))
        })
    }

    /// What `sigil-agent families` prints: a table for people, or one JSON object per
    /// line for scripts.
    pub fn listing(&self, json: bool) -> Result<String, serde_json::Error> {
        let mut out = String::new();
        if json {
            for f in &self.families {
                out.push_str(&serde_json::to_string(&f.spec)?);
                out.push('\n');
            }
            return Ok(out);
        }
        let rows: Vec<[String; 5]> = self
            .families
            .iter()
            .map(|f| {
                let s = &f.spec;
                let shape = match s.prefixes.as_slice() {
                    [] => s.pattern.clone(),
                    prefixes => prefixes.join(" "),
                };
                let mut places: Vec<String> = Vec::new();
                places.extend(s.headers.iter().map(|h| format!("header {h}")));
                places.extend(s.schemes.iter().map(|h| format!("Authorization: {h}")));
                places.extend(s.query.iter().map(|q| format!("?{q}=")));
                places.extend(s.cookies.iter().map(|c| format!("cookie {c}")));
                places.extend(s.path.iter().map(|_| "URL path".to_owned()));
                if places.is_empty() {
                    places.push("Authorization, any header, query or cookie".to_owned());
                }
                let lifetime = match s.lifetime {
                    Lifetime::Static => "static",
                    Lifetime::ShortLived => "short_lived",
                };
                [s.name.clone(), s.vendor.clone(), lifetime.to_owned(), shape, places.join(", ")]
            })
            .collect();
        let header = ["FAMILY", "VENDOR", "LIFETIME", "PREFIX OR SHAPE", "WHERE"];
        let widths: Vec<usize> = (0..header.len())
            .map(|i| rows.iter().filter_map(|r| r.get(i)).map(String::len).chain(header.get(i).map(|h| h.len())).max().unwrap_or(0).min(48))
            .collect();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let cells: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        };
        line(&mut header.iter().copied());
        for row in &rows {
            line(&mut row.iter().map(String::as_str));
        }
        out.push_str(&format!(
            "{} families. Any bearer token, Basic credential or generic API-key header is \
             reported too (family `generic`); SigV4 is recognised for any key id.\n",
            self.families.len()
        ));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogue_parses_with_enough_families() {
        let c = Catalogue::parse(SOURCE).expect("families.toml parses");
        assert!(c.families().len() >= 100, "{} families", c.families().len());
        assert!(catalogue().families().len() == c.families().len());
        for f in c.families() {
            assert!(!f.spec.vendor.is_empty(), "{}", f.spec.name);
            assert!(
                f.spec.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "family names are snake_case labels: {}",
                f.spec.name
            );
            let id_group =
                f.pattern.capture_names().flatten().any(|n| n == "id") || f.path.as_ref().is_some_and(|p| p.capture_names().flatten().any(|n| n == "id"));
            assert_eq!(id_group, f.spec.identifier.is_some(), "{}: `id` group iff identifier", f.spec.name);
        }
    }

    #[test]
    fn listing_names_every_family_in_both_forms() {
        let c = catalogue();
        let table = c.listing(false).expect("renders");
        let json = c.listing(true).expect("renders");
        assert_eq!(json.lines().count(), c.families().len());
        for f in c.families() {
            assert!(table.lines().any(|l| l.starts_with(&format!("{} ", f.name()))), "{}", f.name());
        }
        assert!(table.contains("header X-Vault-Token") && table.contains("Authorization: SSWS"));
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap_or("")).expect("json");
        assert!(first["name"].is_string() && first["lifetime"].is_string());
    }

    #[test]
    fn bad_catalogues_are_clear_errors() {
        let head = "[generic]\nheaders=[]\nquery=[]\ncookies=[]\n";
        let err = |body: &str| Catalogue::parse(&format!("{head}{body}")).err().map(|e| e.to_string());
        assert!(err("[[family]]\nname='x'\nvendor='v'\nlifetime='static'\npattern='('\n").is_some_and(|e| e.contains("family x: bad pattern")));
        assert!(err("[[family]]\nname='x'\nvendor='v'\nlifetime='forever'\npattern='a'\n").is_some_and(|e| e.contains("does not parse")));
        assert!(err("[[family]]\nname='x'\nvendor='v'\nlifetime='static'\npattern='a'\npath='/a'\n").is_some_and(|e| e.contains("no `secret` group")));
        let twice = "[[family]]\nname='x'\nvendor='v'\nlifetime='static'\npattern='a'\n";
        assert!(err(&format!("{twice}{twice}")).is_some_and(|e| e.contains("listed twice")));
        assert!(err("[[family]]\nname='x'\nvendor='v'\nlifetime='static'\npattern='a'\nsurprise=1\n").is_some());
    }

    #[test]
    fn classify_prefers_shape_then_prefix_then_single_vendor_place() {
        let c = catalogue();
        let name = |v: Option<Verdict<'_>>| match v {
            Some(Verdict::Family(f)) => Some(f.name().to_owned()),
            Some(Verdict::Generic) => Some("generic".to_owned()),
            None => None,
        };
        // A vendor header names its family even when the value has an odd shape.
        assert_eq!(name(c.classify(Placement::Header, "X-Vault-Token", "odd")).as_deref(), Some("hashicorp_vault_token"));
        // A generic header with an unknown value is a generic credential.
        assert_eq!(name(c.classify(Placement::Header, "x-api-key", "3f9a8b")).as_deref(), Some("generic"));
        // An unlisted header is nothing unless the value has a family's full shape.
        assert_eq!(name(c.classify(Placement::Header, "x-trace", "3f9a8b")), None);
        let ghp = format!("ghp_{}", "a1B2".repeat(9));
        assert_eq!(name(c.classify(Placement::Header, "x-trace", &ghp)).as_deref(), Some("github_pat"));
        assert_eq!(name(c.classify(Placement::Query, "q", "ghp_short")), None);
    }
}
