//! The INF: stamping the `inf/rvscsi.inx` template and checking the result's cross-references.
//!
//! Stamping replaces `$ARCH$` with the Windows architecture name and sets `DriverVer` to the
//! build date and the crate version, as stampinf does on a WDK host. The check parses the
//! sections and follows every reference a driver installation follows: Manufacturer -> models
//! -> DDInstall (+ `.Services`, `.HW`) -> CopyFiles / AddReg / service and event-log sections;
//! each copied file must be listed in SourceDisksFiles, on a known disk and present in the
//! package directory; each `%string%` must be defined; and no section may be left unreferenced
//! (an unreferenced section is usually a misspelt reference).

use std::collections::BTreeSet;
use std::path::Path;

/// Sections Windows reads by name rather than through a reference.
const ROOT_SECTIONS: &[&str] = &[
    "version",
    "manufacturer",
    "destinationdirs",
    "sourcedisksnames",
    "sourcedisksfiles",
    "strings",
];

/// One `key = values` or bare `values` line of a section.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    key: Option<String>,
    values: Vec<String>,
}

/// One `[section]` and its entries.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    entries: Vec<Entry>,
}

/// A parsed INF.
#[derive(Debug)]
pub struct Inf {
    sections: Vec<Section>,
    /// Every `%token%` used outside `[Strings]`, with its line.
    tokens: Vec<(String, usize)>,
}

/// Removes a `;` comment, ignoring semicolons inside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (index, character) in line.char_indices() {
        match character {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..index],
            _ => {}
        }
    }
    line
}

/// Splits on commas outside quotes; trims and unquotes each value.
fn split_values(text: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for character in text.chars() {
        match character {
            '"' => quoted = !quoted,
            ',' if !quoted => values.push(std::mem::take(&mut current).trim().to_owned()),
            _ => current.push(character),
        }
    }
    values.push(current.trim().to_owned());
    values
}

/// The `%name%` tokens of a line (`%%` is an escaped percent sign, `%12%` a DIRID).
fn tokens(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else { break };
        let name = &after[..end];
        if !name.is_empty() && !name.chars().all(|c| c.is_ascii_digit()) {
            found.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    found
}

impl Inf {
    /// Parses INF text. Lines before the first section header are an error.
    ///
    /// # Errors
    /// The first line that is neither blank, a comment, a header nor inside a section.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut sections: Vec<Section> = Vec::new();
        let mut tokens_used = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(header) = line.strip_prefix('[') {
                let name = header
                    .strip_suffix(']')
                    .ok_or_else(|| format!("line {line_number}: unterminated section header"))?;
                sections.push(Section {
                    name: name.trim().to_owned(),
                    entries: Vec::new(),
                });
                continue;
            }
            let section = sections
                .last_mut()
                .ok_or_else(|| format!("line {line_number}: an entry before any section"))?;
            if !section.name.eq_ignore_ascii_case("strings") {
                tokens_used.extend(tokens(line).into_iter().map(|t| (t, line_number)));
            }
            let (key, values) = match line.split_once('=') {
                Some((key, values)) if !key.contains('"') => {
                    (Some(key.trim().to_owned()), split_values(values))
                }
                _ => (None, split_values(line)),
            };
            section.entries.push(Entry {
                line: line_number,
                key,
                values,
            });
        }
        Ok(Self {
            sections,
            tokens: tokens_used,
        })
    }

    fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|section| section.name.eq_ignore_ascii_case(name))
    }

    /// Every hardware ID of every models section `[Manufacturer]` names, in INF order, each
    /// once, lower case (as inf2cat lists them in a catalog's `HWID<n>` attributes).
    #[must_use]
    pub fn hardware_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let Some(manufacturer) = self.section("Manufacturer") else {
            return ids;
        };
        for entry in &manufacturer.entries {
            let Some((base, decorations)) = entry.values.split_first() else {
                continue;
            };
            for decoration in decorations {
                let Some(models) = self.section(&format!("{base}.{decoration}")) else {
                    continue;
                };
                for id in models.entries.iter().flat_map(|e| e.values.iter().skip(1)) {
                    let id = id.to_ascii_lowercase();
                    if !id.is_empty() && !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
        ids
    }

    /// The values of every `key = ...` entry of `section`.
    fn values_of<'a>(section: &'a Section, key: &str) -> impl Iterator<Item = &'a Entry> {
        section.entries.iter().filter(move |entry| {
            entry
                .key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(key))
        })
    }
}

/// `$ARCH$` in `template` becomes `arch`; the `[Version]` `DriverVer` becomes
/// `MM/DD/YYYY,major.minor.patch.0`.
///
/// # Errors
/// If the template has no `DriverVer` line or `version` is not `major.minor.patch`.
pub fn stamp(
    template: &str,
    arch: &str,
    date: (u32, u32, u32),
    version: &str,
) -> Result<String, String> {
    let parts: Vec<u16> = version
        .split('.')
        .map(|part| {
            part.parse::<u16>().map_err(|_| {
                format!("crate version {version} is not major.minor.patch with parts below 65536")
            })
        })
        .collect::<Result<_, _>>()?;
    let [major, minor, patch] = parts[..] else {
        return Err(format!("crate version {version} is not major.minor.patch"));
    };
    let (year, month, day) = date;
    let driver_ver =
        format!("DriverVer   = {month:02}/{day:02}/{year:04},{major}.{minor}.{patch}.0");
    let mut stamped = String::with_capacity(template.len());
    let mut replaced = false;
    for line in template.lines() {
        if strip_comment(line)
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("driverver")
        {
            stamped.push_str(&driver_ver);
            replaced = true;
        } else {
            stamped.push_str(&line.replace("$ARCH$", arch));
        }
        stamped.push_str("\r\n");
    }
    if replaced {
        Ok(stamped)
    } else {
        Err("the INF template has no DriverVer line to stamp".into())
    }
}

/// The proleptic Gregorian (year, month, day) of a Unix time in seconds (UTC).
#[must_use]
pub fn civil_date(unix_seconds: u64) -> (u32, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01.
    let days = unix_seconds / 86_400;
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

/// Checks a stamped INF for architecture `arch` against the files in `package`.
///
/// # Errors
/// Every problem found, one message each, naming the line where possible.
pub fn check(text: &str, arch: &str, package: &Path) -> Result<(), Vec<String>> {
    let inf = Inf::parse(text).map_err(|e| vec![e])?;
    let mut checker = Checker {
        inf: &inf,
        arch,
        problems: Vec::new(),
        referenced: BTreeSet::new(),
        installs: BTreeSet::new(),
        copy_files: Vec::new(),
        add_regs: Vec::new(),
        service_binaries: Vec::new(),
    };
    if text.contains("$ARCH$") {
        checker
            .problems
            .push("$ARCH$ is still in the INF: it was not stamped".into());
    }
    check_version(&inf, &mut checker.problems);
    check_add_reg_lines(&inf, &mut checker.problems);
    check_driver_store(&inf, arch, &mut checker.problems);
    for model in checker.models() {
        checker.follow_models(&model);
    }
    for (name, line) in std::mem::take(&mut checker.add_regs) {
        checker.require(&name, line, "AddReg");
    }
    let copied = checker.copied_files(package);
    checker.check_service_binaries(&copied);
    checker.check_strings();
    checker.check_orphans();
    if checker.problems.is_empty() {
        Ok(())
    } else {
        Err(checker.problems)
    }
}

/// `(value, line)` pairs collected while following references.
type Referrals = Vec<(String, usize)>;

/// The state of one INF check: what was referenced, found and wrong so far.
struct Checker<'a> {
    inf: &'a Inf,
    arch: &'a str,
    problems: Vec<String>,
    referenced: BTreeSet<String>,
    /// DDInstall sections already followed (several hardware IDs share one).
    installs: BTreeSet<String>,
    copy_files: Referrals,
    add_regs: Referrals,
    service_binaries: Referrals,
}

/// Whether `entry`'s key is `key` (INF keys are case-insensitive).
fn has_key(entry: &Entry, key: &str) -> bool {
    entry
        .key
        .as_deref()
        .is_some_and(|k| k.eq_ignore_ascii_case(key))
}

/// Every value of every `key = ...` entry of `section`, with its line.
fn referrals(section: &Section, key: &str) -> Referrals {
    Inf::values_of(section, key)
        .flat_map(|entry| entry.values.iter().map(|value| (value.clone(), entry.line)))
        .collect()
}

impl Checker<'_> {
    /// Records a reference to section `name`; reports it if the section does not exist.
    fn require(&mut self, name: &str, line: usize, by: &str) -> bool {
        if self.inf.section(name).is_some() {
            self.referenced.insert(name.to_ascii_lowercase());
            true
        } else {
            self.problems.push(format!(
                "line {line}: {by} names section [{name}], which does not exist"
            ));
            false
        }
    }

    /// `[Manufacturer]` -> the models sections it names; one must be for this architecture.
    fn models(&mut self) -> Vec<String> {
        let Some(manufacturer) = self.inf.section("Manufacturer") else {
            self.problems
                .push("there is no [Manufacturer] section".into());
            return Vec::new();
        };
        let arch_prefix = format!("nt{}", self.arch);
        let mut models = Vec::new();
        for entry in &manufacturer.entries {
            let Some((base, decorations)) = entry.values.split_first() else {
                continue;
            };
            for decoration in decorations {
                let name = format!("{base}.{decoration}");
                if self.require(&name, entry.line, "[Manufacturer]") {
                    models.push(name);
                }
            }
            if !decorations
                .iter()
                .any(|d| d.to_ascii_lowercase().starts_with(&arch_prefix))
            {
                self.problems.push(format!(
                    "line {}: [Manufacturer] has no models section for NT{}",
                    entry.line, self.arch
                ));
            }
        }
        models
    }

    /// A models section -> each DDInstall (most specific decoration) and its companions.
    fn follow_models(&mut self, model: &str) {
        let Some(section) = self.inf.section(model) else {
            return;
        };
        for entry in &section.entries {
            let Some(install) = entry.values.first() else {
                continue;
            };
            if entry.values.len() < 2 {
                self.problems.push(format!(
                    "line {}: model entry has no hardware ID",
                    entry.line
                ));
            }
            let candidates = [
                format!("{install}.NT{}", self.arch),
                format!("{install}.NT"),
                install.clone(),
            ];
            let Some(ddinstall) = candidates
                .into_iter()
                .find(|name| self.inf.section(name).is_some())
            else {
                self.problems.push(format!(
                    "line {}: install section {install} (or .NT / .NT{}) does not exist",
                    entry.line, self.arch
                ));
                continue;
            };
            self.require(&ddinstall, entry.line, model);
            if self.installs.insert(ddinstall.to_ascii_lowercase()) {
                self.follow_install(&ddinstall, entry.line);
            }
        }
    }

    /// DDInstall -> CopyFiles, AddReg, `.Services` (required) and `.HW` (optional).
    fn follow_install(&mut self, ddinstall: &str, line: usize) {
        let inf = self.inf;
        if let Some(section) = inf.section(ddinstall) {
            self.copy_files.extend(referrals(section, "CopyFiles"));
            self.add_regs.extend(referrals(section, "AddReg"));
        }
        let services = format!("{ddinstall}.Services");
        if self.require(&services, line, ddinstall) {
            let entries = inf.section(&services).map_or(&[][..], |s| &s.entries[..]);
            for entry in entries.iter().filter(|e| has_key(e, "AddService")) {
                // AddService = name, flags, service-install-section[, event-log-section]
                for name in entry.values.iter().skip(2).take(2) {
                    if self.require(name, entry.line, "AddService")
                        && let Some(service) = inf.section(name)
                    {
                        self.add_regs.extend(referrals(service, "AddReg"));
                        self.service_binaries
                            .extend(referrals(service, "ServiceBinary"));
                    }
                }
            }
        }
        let hw = format!("{ddinstall}.HW");
        if let Some(section) = inf.section(&hw) {
            self.require(&hw, line, ddinstall);
            self.add_regs.extend(referrals(section, "AddReg"));
        }
    }

    /// CopyFiles -> files: each has a destination, is listed in SourceDisksFiles on a known
    /// disk, and is in the package. Returns the files copied.
    fn copied_files(&mut self, package: &Path) -> Referrals {
        let inf = self.inf;
        let destinations = inf.section("DestinationDirs");
        let mut copied = Vec::new();
        for (name, line) in std::mem::take(&mut self.copy_files) {
            if let Some(file) = name.strip_prefix('@') {
                copied.push((file.to_owned(), line));
            } else if self.require(&name, line, "CopyFiles") {
                copied.extend(
                    inf.section(&name)
                        .into_iter()
                        .flat_map(|s| &s.entries)
                        .filter_map(|e| e.values.first().map(|f| (f.clone(), e.line))),
                );
                let has_destination = destinations.is_some_and(|d| {
                    d.entries
                        .iter()
                        .any(|e| has_key(e, &name) || has_key(e, "DefaultDestDir"))
                });
                if !has_destination {
                    self.problems.push(format!(
                        "line {line}: CopyFiles section [{name}] has no DestinationDirs entry"
                    ));
                }
            }
        }
        let source_files = inf.section("SourceDisksFiles");
        let disks = inf.section("SourceDisksNames");
        for (file, line) in &copied {
            let listing = source_files.and_then(|s| s.entries.iter().find(|e| has_key(e, file)));
            match listing {
                None => self.problems.push(format!(
                    "line {line}: {file} is copied but not listed in [SourceDisksFiles]"
                )),
                Some(listing) => {
                    let disk = listing.values.first().map_or("", String::as_str);
                    if !disks.is_some_and(|d| d.entries.iter().any(|e| has_key(e, disk))) {
                        self.problems.push(format!(
                            "line {}: {file} is on disk '{disk}', which [SourceDisksNames] \
                             does not define",
                            listing.line
                        ));
                    }
                }
            }
            if !package.join(file).is_file() {
                self.problems.push(format!(
                    "line {line}: {file} is copied but is not in the package ({})",
                    package.display()
                ));
            }
        }
        copied
    }

    /// Each ServiceBinary is one of the copied files.
    fn check_service_binaries(&mut self, copied: &Referrals) {
        for (binary, line) in std::mem::take(&mut self.service_binaries) {
            let file = binary.rsplit(['\\', '/']).next().unwrap_or(&binary);
            if !copied.iter().any(|(c, _)| c.eq_ignore_ascii_case(file)) {
                self.problems.push(format!(
                    "line {line}: ServiceBinary {binary} is not a file the INF copies"
                ));
            }
        }
    }

    /// Each `%token%` is defined in `[Strings]`.
    fn check_strings(&mut self) {
        let strings = self.inf.section("Strings");
        for (token, line) in &self.inf.tokens {
            if !strings.is_some_and(|s| s.entries.iter().any(|e| has_key(e, token))) {
                self.problems.push(format!(
                    "line {line}: %{token}% is not defined in [Strings]"
                ));
            }
        }
    }

    /// Every section is a root section or referenced.
    fn check_orphans(&mut self) {
        for section in &self.inf.sections {
            let lower = section.name.to_ascii_lowercase();
            if !ROOT_SECTIONS.contains(&lower.as_str()) && !self.referenced.contains(&lower) {
                self.problems
                    .push(format!("section [{}] is never referenced", section.name));
            }
        }
    }
}

/// The `[Version]` section: signature, class, catalog and a stamped DriverVer.
fn check_version(inf: &Inf, problems: &mut Vec<String>) {
    let Some(version) = inf.section("Version") else {
        problems.push("there is no [Version] section".into());
        return;
    };
    let value = |key: &str| {
        Inf::values_of(version, key)
            .next()
            .and_then(|e| e.values.first().cloned())
    };
    let expect = |key: &str, wanted: &str, problems: &mut Vec<String>| match value(key) {
        Some(found) if found.eq_ignore_ascii_case(wanted) => {}
        found => problems.push(format!("[Version] {key} is {found:?}, expected {wanted}")),
    };
    expect("Signature", "$Windows NT$", problems);
    expect("Class", "SCSIAdapter", problems);
    expect(
        "ClassGuid",
        "{4D36E97B-E325-11CE-BFC1-08002BE10318}",
        problems,
    );
    expect("PnpLockdown", "1", problems);
    if value("CatalogFile").is_none() {
        problems.push("[Version] has no CatalogFile (needed for a signed catalog)".into());
    }
    let driver_ver = Inf::values_of(version, "DriverVer")
        .next()
        .map(|e| e.values.clone());
    let well_formed = driver_ver.as_deref().is_some_and(|values| match values {
        [date, version] => {
            let date_parts: Vec<_> = date.split('/').collect();
            let version_parts: Vec<_> = version.split('.').collect();
            date_parts.len() == 3
                && date_parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                && version_parts.len() == 4
                && version_parts.iter().all(|p| p.parse::<u16>().is_ok())
                && date != "01/01/2000"
        }
        _ => false,
    });
    if !well_formed {
        problems.push(format!(
            "[Version] DriverVer {driver_ver:?} is not a stamped MM/DD/YYYY,a.b.c.d"
        ));
    }
}

/// `FLG_ADDREG_KEYONLY`: create the key, write no value.
const FLG_ADDREG_KEYONLY: u32 = 0x10;
/// The first build where a driver package may run from the driver store (DIRID 13): Windows
/// 10 1709. Some stacks waited for 1803; Windows Server 2019 (17763) is the first server
/// release after both.
const DRIVER_STORE_MIN_BUILD: u32 = 16_299;
/// Windows Server 2016, the oldest build the INF installs on.
const OLDEST_BUILD: u32 = 14_393;

fn parse_number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Every `reg-root, subkey, value-name, flags, value` line of every AddReg section has its
/// fields where SetupAPI reads them: a key-only line keeps the empty value-name field
/// (`HKR, "key",, 0x00000010`); without it the flags become the name of a value.
fn check_add_reg_lines(inf: &Inf, problems: &mut Vec<String>) {
    let add_reg_sections: BTreeSet<String> = inf
        .sections
        .iter()
        .flat_map(|section| referrals(section, "AddReg"))
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    let roots = ["HKR", "HKLM", "HKCU", "HKCR", "HKU"];
    for section in &inf.sections {
        if !add_reg_sections.contains(&section.name.to_ascii_lowercase()) {
            continue;
        }
        for entry in &section.entries {
            let fields = &entry.values;
            if entry.key.is_some() || !fields.first().is_some_and(|r| roots.contains(&r.as_str())) {
                continue;
            }
            let name = fields.get(2).map_or("", String::as_str);
            if fields.len() == 3 && parse_number(name).is_some() {
                problems.push(format!(
                    "line {}: AddReg line names a value \"{name}\": a key-only line needs the \
                     empty value-name field (`{}, \"{}\",, {name}`)",
                    entry.line, fields[0], fields[1]
                ));
            }
            let flags = fields.get(3).and_then(|f| parse_number(f)).unwrap_or(0);
            if flags & FLG_ADDREG_KEYONLY != 0 && !name.is_empty() {
                problems.push(format!(
                    "line {}: AddReg line has FLG_ADDREG_KEYONLY (0x10) and a value name \
                     \"{name}\": a key-only line writes no value",
                    entry.line
                ));
            }
        }
    }
}

/// The build of a `NT<arch>.10.0...<build>` models decoration for `arch`, if it is one.
fn decoration_build(decoration: &str, arch: &str) -> Option<u32> {
    let lower = decoration.to_ascii_lowercase();
    let rest = lower.strip_prefix(&format!("nt{arch}"))?;
    match rest.strip_prefix(".10.0...") {
        Some(build) => build.parse().ok(),
        None => rest.is_empty().then_some(0),
    }
}

/// Run from the driver store where Windows supports it, System32\drivers where it does not:
/// models sections for builds from [`DRIVER_STORE_MIN_BUILD`] on copy to DIRID 13 and start the
/// service from `%13%`; models sections for older builds use neither (DIRID 13 means nothing
/// there); and one models section still covers Server 2016 ([`OLDEST_BUILD`]).
fn check_driver_store(inf: &Inf, arch: &str, problems: &mut Vec<String>) {
    let Some(manufacturer) = inf.section("Manufacturer") else {
        return;
    };
    let mut oldest = None::<u32>;
    for entry in &manufacturer.entries {
        let Some((base, decorations)) = entry.values.split_first() else {
            continue;
        };
        for decoration in decorations {
            let Some(build) = decoration_build(decoration, arch) else {
                continue;
            };
            oldest = Some(oldest.map_or(build, |o| o.min(build)));
            let models = format!("{base}.{decoration}");
            let store = build >= DRIVER_STORE_MIN_BUILD;
            for (place, line, dirid) in install_destinations(inf, &models, arch) {
                if store && dirid != 13 {
                    problems.push(format!(
                        "line {line}: [{models}] is for build {build}, which runs drivers from \
                         the driver store, but {place} uses DIRID {dirid}, not 13"
                    ));
                } else if !store && dirid == 13 {
                    problems.push(format!(
                        "line {line}: [{models}] covers builds before {DRIVER_STORE_MIN_BUILD}, \
                         which cannot run a boot-start driver from the driver store, but \
                         {place} uses DIRID 13"
                    ));
                }
            }
        }
    }
    if oldest.is_none_or(|build| build > OLDEST_BUILD) {
        problems.push(format!(
            "[Manufacturer] has no models section for NT{arch} build {OLDEST_BUILD} (Windows \
             Server 2016) or older: the DIRID 12 fallback is missing"
        ));
    }
}

/// Where the installs of models section `models` put the image: each CopyFiles section's
/// DIRID and each ServiceBinary's leading `%dirid%`, as `(what, line, dirid)`.
fn install_destinations(inf: &Inf, models: &str, arch: &str) -> Vec<(String, usize, u32)> {
    let mut found = Vec::new();
    let Some(section) = inf.section(models) else {
        return found;
    };
    let destinations = inf.section("DestinationDirs");
    let dirid_of = |list: &str| {
        let entries = destinations.map_or(&[][..], |d| &d.entries[..]);
        entries
            .iter()
            .find(|e| has_key(e, list))
            .or_else(|| entries.iter().find(|e| has_key(e, "DefaultDestDir")))
            .and_then(|e| e.values.first())
            .and_then(|dirid| parse_number(dirid))
    };
    for entry in &section.entries {
        let Some(install) = entry.values.first() else {
            continue;
        };
        let Some(ddinstall) = [format!("{install}.NT{arch}"), format!("{install}.NT")]
            .into_iter()
            .chain(std::iter::once(install.clone()))
            .find(|name| inf.section(name).is_some())
        else {
            continue;
        };
        if let Some(install_section) = inf.section(&ddinstall) {
            for (list, line) in referrals(install_section, "CopyFiles") {
                if let Some(dirid) = dirid_of(&list) {
                    found.push((format!("CopyFiles section [{list}]"), line, dirid));
                }
            }
        }
        let services = inf.section(&format!("{ddinstall}.Services"));
        for add in services
            .into_iter()
            .flat_map(|s| Inf::values_of(s, "AddService"))
        {
            let Some(service) = add.values.get(2).and_then(|name| inf.section(name)) else {
                continue;
            };
            for (binary, line) in referrals(service, "ServiceBinary") {
                let dirid = binary
                    .strip_prefix('%')
                    .and_then(|rest| rest.split_once('%'))
                    .and_then(|(dirid, _)| parse_number(dirid));
                if let Some(dirid) = dirid {
                    found.push((format!("ServiceBinary {binary}"), line, dirid));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests;
