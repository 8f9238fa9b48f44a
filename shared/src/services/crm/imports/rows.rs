//! The rules of an import's rows, without I/O: whether a row is a valid contact or company and
//! what it writes, its dedupe key, what dedupe and the plan's limit make of it, which companies
//! the contacts name, and which Zoho records a page adds. `chunk` and `run` read what the rules
//! need (definitions, owners, existing keys, the plan, pages) and write what they decide.
use super::*;

/// What becomes of a checked row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Insert,
    Update(Uuid),
    Skip,
    Fail(String, String),
}

/// What a chunk did, for the job's counters.
pub(super) struct Counts {
    pub(super) created: i64,
    pub(super) updated: i64,
    pub(super) skipped: i64,
    pub(super) failed: i64,
    pub(super) companies: i64,
}

/// Why a row fails: the fields at fault (`a, b`; none when the row could not be read) and the
/// message.
pub(super) type Failure = (String, String);

/// A row that failed, with its fields and message (kept for the errors file).
pub(super) type Failed<'r> = (&'r RawRow, String, String);

pub(super) fn describe(errors: &[FieldError]) -> Failure {
    let mut fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    fields.dedup();
    let message = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    (fields.join(", "), message)
}

/// The `owner` column: a member of the team, by email (`owners` by lower-cased email).
pub(super) fn owner_of(cells: &Cells, owners: &HashMap<String, Uuid>, v: &mut Validator) -> Option<Uuid> {
    let email = cells.get("owner")?;
    let found = owners.get(&email.to_lowercase()).copied();
    if found.is_none() {
        v.error(
            "owner",
            "not_a_member",
            format!("no member of the team has the email {email:?}"),
        );
    }
    found
}

/// What a row needs to be checked: the job's column mapping, the tenant's custom fields of the
/// entity and the team's members by lower-cased email.
pub(super) struct RowRules<'a> {
    pub(super) mapping: &'a [Option<String>],
    pub(super) defs: &'a [CustomField],
    pub(super) owners: &'a HashMap<String, Uuid>,
}

impl RowRules<'_> {
    /// The row's cells by field, checked by `check` (every issue at once, as the API does).
    fn check<T>(
        &self,
        cells: &Result<Vec<String>, String>,
        check: impl FnOnce(&Cells, &mut Validator) -> T,
    ) -> Result<T, Failure> {
        let cells = cells.as_ref().map_err(|why| (String::new(), why.clone()))?;
        let strs: Vec<&str> = cells.iter().map(String::as_str).collect();
        let c = Cells::new(self.mapping, &strs);
        let mut v = Validator::new();
        let checked = check(&c, &mut v);
        let errors = v.into_errors();
        if errors.is_empty() {
            Ok(checked)
        } else {
            Err(describe(&errors))
        }
    }
}

/// The rows that pass `check`, each with its row, and the failures, in file order.
pub(super) fn check_rows<T>(
    rows: &[RawRow],
    mut check: impl FnMut(&Result<Vec<String>, String>) -> Result<T, Failure>,
) -> (Vec<(&RawRow, T)>, Vec<Failed<'_>>) {
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for row in rows {
        match check(&row.cells) {
            Ok(checked) => passed.push((row, checked)),
            Err((fields, message)) => failed.push((row, fields, message)),
        }
    }
    (passed, failed)
}

/// A row of a contacts import, checked.
pub(super) struct ContactRow {
    pub(super) valid: contacts::Valid,
    /// The file gives a lifecycle stage (an update keeps the record's otherwise).
    pub(super) stage_given: bool,
    /// The company it names, to link (or create).
    pub(super) company: Option<String>,
}

/// How `create` refuses a contacts row whose email is taken.
pub(super) const EMAIL_TAKEN: (&str, &str) = ("email", "email: another contact of the tenant has this email");

impl ContactRow {
    /// The row as a contact, by the API's rules: `name` splits at its last space when there are
    /// no first and last name columns; the stage is read loosely (`MQL`, `Sales qualified`);
    /// the owner is a member's email; the company a name of at most 200 characters.
    pub(super) fn read(rules: &RowRules, cells: &Result<Vec<String>, String>) -> Result<ContactRow, Failure> {
        rules.check(cells, |c, v| {
            let (first_name, last_name) = if c.has("first_name") || c.has("last_name") {
                (c.text("first_name"), c.text("last_name"))
            } else {
                match c.get("name").map(|n| n.rsplit_once(' ').unwrap_or(("", n))) {
                    Some((first, last)) => (first.trim().to_owned(), last.trim().to_owned()),
                    None => (String::new(), String::new()),
                }
            };
            let stage = c.get("lifecycle_stage").and_then(|raw| {
                let stage = table::lifecycle_stage(raw);
                if stage.is_none() {
                    v.error(
                        "lifecycle_stage",
                        "invalid_option",
                        "must be one of subscriber, lead, marketing_qualified, sales_qualified, opportunity, customer, \
                         evangelist, other",
                    );
                }
                stage
            });
            let owner_id = owner_of(c, rules.owners, v);
            let company = c
                .get("company")
                .and_then(|n| v.field("company", Text::parse(n, 1, 200)))
                .map(Text::into_inner);
            let input = ContactInput {
                first_name,
                last_name,
                email: c.opt("email"),
                phone: c.opt("phone"),
                mobile: c.opt("mobile"),
                title: c.opt("title"),
                company_id: None,
                owner_id,
                lifecycle_stage: stage.unwrap_or_default(),
                tags: c.tags(),
                address: c.address(),
                notes: c.text("notes"),
                source: Some("import".to_owned()),
                custom: c.custom(rules.defs),
            };
            ContactRow {
                valid: contacts::check(&input, rules.defs, v),
                stage_given: stage.is_some(),
                company,
            }
        })
    }

    /// Its dedupe key: the email, lower-cased (none: always created).
    pub(super) fn key(&self) -> Option<String> {
        self.valid.email.as_ref().map(|e| e.to_lowercase())
    }

    /// The contact it creates as `id`, working for `company_id`.
    pub(super) fn insert(&self, id: Uuid, company_id: Option<Uuid>) -> Value {
        let v = &self.valid;
        json!({
            "id": id, "first_name": v.first_name, "last_name": v.last_name, "email": v.email,
            "phone": v.phone, "mobile": v.mobile, "title": v.title, "company_id": company_id,
            "owner_id": v.owner_id, "lifecycle_stage": table::lifecycle_name(v.stage), "tags": v.common.tags,
            "address": v.common.address, "notes": v.common.notes, "source": v.common.source,
            "custom": v.common.custom,
        })
    }

    /// What it fills in the contact `target` (its email stays; no stage column, no stage).
    pub(super) fn update(&self, target: Uuid, company_id: Option<Uuid>) -> Value {
        let v = &self.valid;
        json!({
            "id": target, "first_name": v.first_name, "last_name": v.last_name,
            "phone": v.phone, "mobile": v.mobile, "title": v.title, "company_id": company_id,
            "owner_id": v.owner_id,
            "lifecycle_stage": self.stage_given.then(|| table::lifecycle_name(v.stage)),
            "tags": v.common.tags, "address": v.common.address, "notes": v.common.notes, "custom": v.common.custom,
        })
    }
}

/// A row of a companies import, checked.
pub(super) struct CompanyRow {
    pub(super) valid: companies::Valid,
}

/// How `create` refuses a companies row whose domain is taken.
pub(super) const DOMAIN_TAKEN: (&str, &str) = ("domain", "domain: another company of the tenant has this domain");

impl CompanyRow {
    /// The row as a company, by the API's rules; the owner is a member's email.
    pub(super) fn read(rules: &RowRules, cells: &Result<Vec<String>, String>) -> Result<CompanyRow, Failure> {
        rules.check(cells, |c, v| {
            let owner_id = owner_of(c, rules.owners, v);
            let input = CompanyInput {
                name: c.text("name"),
                domain: c.opt("domain"),
                industry: c.opt("industry"),
                phone: c.opt("phone"),
                owner_id,
                tags: c.tags(),
                address: c.address(),
                notes: c.text("notes"),
                source: Some("import".to_owned()),
                custom: c.custom(rules.defs),
            };
            CompanyRow {
                valid: companies::check(&input, rules.defs, v),
            }
        })
    }

    /// Its dedupe key: the domain (`d:`), else the name (`n:`), lower-cased.
    pub(super) fn key(&self) -> Option<String> {
        Some(match &self.valid.domain {
            Some(d) => format!("d:{}", d.to_lowercase()),
            None => format!("n:{}", self.valid.name.to_lowercase()),
        })
    }

    /// The company it creates as `id`.
    pub(super) fn insert(&self, id: Uuid) -> Value {
        let v = &self.valid;
        json!({
            "id": id, "name": v.name, "domain": v.domain, "industry": v.industry, "phone": v.phone,
            "owner_id": v.owner_id, "tags": v.common.tags, "address": v.common.address, "notes": v.common.notes,
            "source": v.common.source, "custom": v.common.custom,
        })
    }

    /// What it fills in the company `target`.
    pub(super) fn update(&self, target: Uuid) -> Value {
        let v = &self.valid;
        json!({
            "id": target, "name": v.name, "domain": v.domain, "industry": v.industry, "phone": v.phone,
            "owner_id": v.owner_id, "tags": v.common.tags, "address": v.common.address, "notes": v.common.notes,
            "custom": v.common.custom,
        })
    }
}

/// Decides each valid row's fate by its dedupe key (`None`: no key, always created), against
/// the records that exist and the rows before it in the chunk.
pub(super) fn dedupe(
    rule: Dedupe,
    keys: &[Option<String>],
    existing: &HashMap<String, Uuid>,
    ids: &[Uuid],
    taken: (&str, &str),
) -> Vec<Outcome> {
    let mut seen: HashMap<&str, Uuid> = HashMap::new();
    keys.iter()
        .zip(ids)
        .map(|(key, id)| {
            let Some(key) = key else { return Outcome::Insert };
            let target = existing.get(key).copied().or_else(|| seen.get(key.as_str()).copied());
            match (target, rule) {
                (None, _) => {
                    seen.insert(key, *id);
                    Outcome::Insert
                }
                (Some(_), Dedupe::Skip) => Outcome::Skip,
                (Some(t), Dedupe::Update) => Outcome::Update(t),
                (Some(_), Dedupe::Create) => Outcome::Fail(taken.0.to_owned(), taken.1.to_owned()),
            }
        })
        .collect()
}

/// Only domains are unique: under `create`, a company whose name (it has no domain) is taken
/// is created all the same.
pub(super) fn names_may_repeat(rule: Dedupe, outcomes: &mut [Outcome], keys: &[Option<String>]) {
    if rule != Dedupe::Create {
        return;
    }
    for (o, k) in outcomes.iter_mut().zip(keys) {
        if matches!(o, Outcome::Fail(..)) && k.as_deref().is_some_and(|k| k.starts_with("n:")) {
            *o = Outcome::Insert;
        }
    }
}

/// The plan's contact limit: with `room` contacts left, the inserts past it fail (`why`), and
/// so do the updates of the contacts they would have created.
pub(super) fn limit_inserts(outcomes: &mut [Outcome], ids: &[Uuid], mut room: i64, why: &str) {
    let mut dropped = Vec::new();
    for (o, id) in outcomes.iter_mut().zip(ids) {
        if matches!(o, Outcome::Insert) {
            if room > 0 {
                room -= 1;
            } else {
                dropped.push(*id);
                *o = Outcome::Fail(String::new(), why.to_owned());
            }
        }
    }
    for o in outcomes.iter_mut() {
        if let Outcome::Update(t) = o
            && dropped.contains(t)
        {
            *o = Outcome::Fail(String::new(), why.to_owned());
        }
    }
}

/// The companies the written contacts name, by lower-cased name: the first spelling of each
/// among the rows that are inserted or update a contact.
pub(super) fn named_companies<'p>(rows: &'p [(&RawRow, ContactRow)], outcomes: &[Outcome]) -> HashMap<String, &'p str> {
    let mut spellings: HashMap<String, &str> = HashMap::new();
    for ((_, p), _) in rows
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| matches!(o, Outcome::Insert | Outcome::Update(_)))
    {
        if let Some(name) = &p.company {
            spellings.entry(name.to_lowercase()).or_insert(name);
        }
    }
    spellings
}

/// The companies to create: each named one that was not `found` (by lower-cased name), once,
/// spelled as the chunk's first row naming it spells it.
pub(super) fn new_companies<'p>(
    rows: &'p [(&RawRow, ContactRow)],
    named: &HashMap<String, &str>,
    found: &HashMap<String, Uuid>,
) -> Vec<(String, &'p str)> {
    let mut new: Vec<(String, &str)> = Vec::new();
    for (_, p) in rows {
        if let Some(name) = &p.company {
            let lower = name.to_lowercase();
            if named.contains_key(&lower) && !found.contains_key(&lower) && !new.iter().any(|(n, _)| *n == lower) {
                new.push((lower, name));
            }
        }
    }
    new
}

/// What a chunk writes, in file order.
pub(super) struct Plan<'r> {
    pub(super) created: i64,
    pub(super) updated: i64,
    pub(super) skipped: i64,
    pub(super) inserts: Vec<Value>,
    pub(super) updates: Vec<Value>,
    /// The records created (`true`) or changed, for their timelines.
    pub(super) touched: Vec<(Uuid, bool)>,
    /// Every failed row with its fields and message: `failed` first, then the refused ones.
    pub(super) failures: Vec<Failed<'r>>,
}

/// Sorts the checked rows by their outcomes: `insert` gives the record a row creates (as the
/// id it was given in `ids`), `update` what it fills in the record it matched.
pub(super) fn plan<'r, T>(
    rows: &[(&'r RawRow, T)],
    outcomes: &[Outcome],
    ids: &[Uuid],
    failed: Vec<Failed<'r>>,
    insert: impl Fn(&T, Uuid) -> Value,
    update: impl Fn(&T, Uuid) -> Value,
) -> Plan<'r> {
    let mut plan = Plan {
        created: 0,
        updated: 0,
        skipped: 0,
        inserts: Vec::new(),
        updates: Vec::new(),
        touched: Vec::new(),
        failures: failed,
    };
    for (((row, checked), o), id) in rows.iter().zip(outcomes).zip(ids) {
        match o {
            Outcome::Insert => {
                plan.created += 1;
                plan.touched.push((*id, true));
                plan.inserts.push(insert(checked, *id));
            }
            Outcome::Update(target) => {
                plan.updated += 1;
                plan.touched.push((*target, false));
                plan.updates.push(update(checked, *target));
            }
            Outcome::Skip => plan.skipped += 1,
            Outcome::Fail(f, m) => plan.failures.push((row, f.clone(), m.clone())),
        }
    }
    plan
}

impl Plan<'_> {
    /// The job's counters for the chunk (`companies`: those its contacts created).
    pub(super) fn counts(&self, companies: i64) -> Counts {
        Counts {
            created: self.created,
            updated: self.updated,
            skipped: self.skipped,
            failed: i64::try_from(self.failures.len()).unwrap_or(i64::MAX),
            companies,
        }
    }
}

/// Updates in waves, so that two rows of a chunk updating one record apply in file order.
pub(super) fn waves(updates: Vec<Value>) -> Vec<Vec<Value>> {
    let mut waves: Vec<Vec<Value>> = Vec::new();
    let mut depth: HashMap<String, usize> = HashMap::new();
    for u in updates {
        let key = u
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default();
        let d = depth.entry(key).or_insert(0);
        if waves.len() <= *d {
            waves.push(Vec::new());
        }
        if let Some(w) = waves.get_mut(*d) {
            w.push(u);
        }
        *d += 1;
    }
    waves
}

/// The records of a Zoho page to import, after the last one imported (`last`; ids ascend
/// through the pages), each once, and the newest id imported once they are.
pub(super) fn fresh_records<'v>(records: &'v [Value], last: Option<&str>) -> (Vec<&'v Value>, Option<String>) {
    let fresh: Vec<&Value> = records
        .iter()
        .filter(|r| zoho::id_of(r).is_some_and(|id| last.is_none_or(|last| zoho::after(id, last))))
        .fold(Vec::new(), |mut kept: Vec<&Value>, r| {
            if !kept.iter().any(|k| zoho::id_of(k) == zoho::id_of(r)) {
                kept.push(r);
            }
            kept
        });
    let newest = fresh
        .iter()
        .filter_map(|r| zoho::id_of(r))
        .fold(last.map(str::to_owned), |acc, id| match acc {
            Some(a) if !zoho::after(id, &a) => Some(a),
            _ => Some(id.to_owned()),
        });
    (fresh, newest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::crm::fields::{Entity, FieldType};

    fn row(cells: &[&str]) -> RawRow {
        RawRow {
            number: 1,
            line: 2,
            cells: Ok(cells.iter().map(|c| (*c).to_owned()).collect()),
            raw: cells.join(","),
        }
    }

    fn mapping(fields: &[&str]) -> Vec<Option<String>> {
        fields
            .iter()
            .map(|f| (!f.is_empty()).then(|| (*f).to_owned()))
            .collect()
    }

    fn seats() -> CustomField {
        CustomField {
            id: Uuid::from_u128(7),
            entity: Entity::Contact,
            key: "seats".to_owned(),
            label: "Seats".to_owned(),
            field_type: FieldType::Number,
            options: Vec::new(),
            created_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn ids(n: u128) -> Vec<Uuid> {
        (1..=n).map(|i| Uuid::from_u128(100 + i)).collect()
    }

    #[test]
    fn a_contacts_row_maps_its_columns_to_a_contact_by_the_apis_rules() {
        // Given a mapping with a full name, a loosely written stage, a member as owner, a
        // company, tags and a custom number (one column left out).
        let owner = Uuid::from_u128(1);
        let owners: HashMap<String, Uuid> = [("ada@example.com".to_owned(), owner)].into_iter().collect();
        let defs = [seats()];
        let map = mapping(&[
            "name",
            "email",
            "lifecycle_stage",
            "owner",
            "company",
            "tags",
            "custom.seats",
            "",
        ]);
        let rules = RowRules {
            mapping: &map,
            defs: &defs,
            owners: &owners,
        };
        let r = row(&[
            "Grace Brewster Hopper",
            "Grace@Example.COM",
            "MQL",
            "ADA@example.com",
            "Navy",
            "vip; Ops|vip",
            "12",
            "ignored",
        ]);
        // When it is read.
        let c = ContactRow::read(&rules, &r.cells).unwrap();
        // Then the name splits at its last space, the stage and owner are recognised, the
        // company is kept to link, the email is the dedupe key.
        assert_eq!(
            (c.valid.first_name.as_str(), c.valid.last_name.as_str()),
            ("Grace Brewster", "Hopper")
        );
        assert_eq!(c.valid.stage, contacts::LifecycleStage::MarketingQualified);
        assert!(c.stage_given);
        assert_eq!(c.valid.owner_id, Some(owner));
        assert_eq!(c.company.as_deref(), Some("Navy"));
        assert_eq!(c.valid.common.tags, ["vip", "ops"]);
        assert_eq!(c.valid.common.source, "import");
        assert_eq!(c.valid.common.custom["seats"], json!(12));
        assert_eq!(c.key().as_deref(), Some("grace@example.com"));
        // And it inserts with its stage, updates without its email.
        let id = Uuid::from_u128(9);
        assert_eq!(c.insert(id, None)["lifecycle_stage"], "marketing_qualified");
        assert_eq!(c.insert(id, None)["email"], "Grace@example.com");
        assert!(c.update(id, None).get("email").is_none());
        assert_eq!(c.update(id, Some(owner))["company_id"], json!(owner));
    }

    #[test]
    fn a_contacts_row_fails_with_every_field_at_fault_at_once() {
        // Given a row with a bad stage, an owner who is not a member, a bad email and a custom
        // value that is not a number; and a row that could not be read.
        let owners = HashMap::new();
        let defs = [seats()];
        let map = mapping(&["first_name", "email", "lifecycle_stage", "owner", "custom.seats"]);
        let rules = RowRules {
            mapping: &map,
            defs: &defs,
            owners: &owners,
        };
        let bad = row(&["Ada", "not-an-email", "prospect", "who@example.com", "many"]);
        let unreadable = RawRow {
            cells: Err("the row has 3 cells; the header has 5".to_owned()),
            ..row(&[])
        };
        // When they are read.
        let (fields, message) = ContactRow::read(&rules, &bad.cells).err().unwrap();
        let (none, why) = ContactRow::read(&rules, &unreadable.cells).err().unwrap();
        // Then the failure names each field, in the order checked, with its reason.
        assert_eq!(fields, "lifecycle_stage, owner, email, custom.seats");
        assert!(
            message.starts_with("lifecycle_stage: must be one of subscriber"),
            "{message}"
        );
        assert!(message.contains("owner: no member of the team has the email \"who@example.com\""));
        assert_eq!(
            (none.as_str(), why.as_str()),
            ("", "the row has 3 cells; the header has 5")
        );
        // And a row without any name or email is refused as the API refuses it.
        let empty = row(&["", "", "", "", ""]);
        assert_eq!(ContactRow::read(&rules, &empty.cells).err().unwrap().0, "first_name");
    }

    #[test]
    fn a_companies_row_is_keyed_by_domain_else_by_name() {
        // Given two companies, one with a web address, one without.
        let owners = HashMap::new();
        let map = mapping(&["name", "domain"]);
        let rules = RowRules {
            mapping: &map,
            defs: &[],
            owners: &owners,
        };
        // When they are read.
        let with = CompanyRow::read(&rules, &row(&["Acme", "https://www.Acme.de/"]).cells).unwrap();
        let without = CompanyRow::read(&rules, &row(&["Initech GmbH", ""]).cells).unwrap();
        // Then the domain is normalised and is the key; without one, the name is.
        assert_eq!(with.key().as_deref(), Some("d:acme.de"));
        assert_eq!(without.key().as_deref(), Some("n:initech gmbh"));
        assert_eq!(with.insert(Uuid::nil())["source"], "import");
        assert!(with.update(Uuid::nil()).get("source").is_none());
        // And a company without a name fails naming it.
        assert_eq!(
            CompanyRow::read(&rules, &row(&["", "x.io"]).cells).err().unwrap().0,
            "name"
        );
    }

    #[test]
    fn create_refuses_a_taken_domain_but_not_a_taken_name() {
        // Given a domain and a name that exist, under `create`.
        let existing: HashMap<String, Uuid> = [("d:acme.de", 1), ("n:initech", 2)]
            .into_iter()
            .map(|(k, id)| (k.to_owned(), Uuid::from_u128(id)))
            .collect();
        let keys = vec![Some("d:acme.de".to_owned()), Some("n:initech".to_owned())];
        let mut outcomes = dedupe(Dedupe::Create, &keys, &existing, &ids(2), DOMAIN_TAKEN);
        // When names may repeat.
        names_may_repeat(Dedupe::Create, &mut outcomes, &keys);
        // Then the domain's row fails, the name's is created.
        assert_eq!(
            outcomes,
            [
                Outcome::Fail(DOMAIN_TAKEN.0.to_owned(), DOMAIN_TAKEN.1.to_owned()),
                Outcome::Insert
            ]
        );
    }

    #[test]
    fn inserts_past_the_plans_room_fail_and_so_do_updates_of_them() {
        // Given three new contacts, the third updated by a later row, and room for one.
        let ids = ids(4);
        let mut outcomes = vec![Outcome::Insert, Outcome::Skip, Outcome::Insert, Outcome::Update(ids[2])];
        // When the plan's limit is applied.
        limit_inserts(&mut outcomes, &ids, 1, "no room");
        // Then the first is inserted; the second insert and its update fail.
        let fail = Outcome::Fail(String::new(), "no room".to_owned());
        assert_eq!(outcomes, [Outcome::Insert, Outcome::Skip, fail.clone(), fail]);
    }

    #[test]
    fn companies_are_created_once_as_first_spelled_by_the_rows_that_write() {
        // Given contacts naming "ACME" (skipped), "Acme" (inserted), "acme" (updated), "Known"
        // (found) and "Gone" (failed).
        let owners = HashMap::new();
        let map = mapping(&["last_name", "company"]);
        let rules = RowRules {
            mapping: &map,
            defs: &[],
            owners: &owners,
        };
        let raw: Vec<RawRow> = [
            ["A", "ACME"],
            ["B", "Acme"],
            ["C", "acme"],
            ["D", "Known"],
            ["E", "Gone"],
        ]
        .iter()
        .map(|cells| row(cells))
        .collect();
        let (rows, failed) = check_rows(&raw, |cells| ContactRow::read(&rules, cells));
        assert!(failed.is_empty());
        let outcomes = [
            Outcome::Skip,
            Outcome::Insert,
            Outcome::Update(Uuid::nil()),
            Outcome::Insert,
            Outcome::Fail(String::new(), "x".to_owned()),
        ];
        // When the named companies are looked up.
        let named = named_companies(&rows, &outcomes);
        let found: HashMap<String, Uuid> = [("known".to_owned(), Uuid::nil())].into_iter().collect();
        let new = new_companies(&rows, &named, &found);
        // Then the writing rows' first spelling is looked up; the one company to create is
        // spelled as the chunk's first row naming it.
        assert_eq!(named.get("acme").copied(), Some("Acme"));
        assert!(!named.contains_key("gone"));
        assert_eq!(new, [("acme".to_owned(), "ACME")]);
    }

    #[test]
    fn a_plan_writes_rows_by_their_outcomes_and_counts_them() {
        // Given four read rows and one that failed to read.
        let raw: Vec<RawRow> = (0..5).map(|i| row(&[&i.to_string()])).collect();
        let (checked, failed) = check_rows(&raw, |cells| match cells {
            Ok(c) if c[0] == "4" => Err(("x".to_owned(), "unreadable".to_owned())),
            Ok(c) => Ok(c[0].clone()),
            Err(_) => unreachable!(),
        });
        let ids = ids(4);
        let outcomes = [
            Outcome::Insert,
            Outcome::Update(Uuid::nil()),
            Outcome::Skip,
            Outcome::Fail("email".to_owned(), "taken".to_owned()),
        ];
        // When the chunk is planned.
        let plan = plan(
            &checked,
            &outcomes,
            &ids,
            failed,
            |c, id| json!([c, id]),
            |c, t| json!([c, t]),
        );
        // Then each row lands by its outcome; failures keep the unread first.
        assert_eq!(plan.inserts, [json!(["0", ids[0]])]);
        assert_eq!(plan.updates, [json!(["1", Uuid::nil()])]);
        assert_eq!(plan.touched, [(ids[0], true), (Uuid::nil(), false)]);
        let failures: Vec<(&str, &str)> = plan.failures.iter().map(|(_, f, m)| (f.as_str(), m.as_str())).collect();
        assert_eq!(failures, [("x", "unreadable"), ("email", "taken")]);
        let counts = plan.counts(3);
        assert_eq!(
            (
                counts.created,
                counts.updated,
                counts.skipped,
                counts.failed,
                counts.companies
            ),
            (1, 1, 1, 2, 3)
        );
    }

    #[test]
    fn updates_of_one_record_go_in_separate_waves_in_file_order() {
        // Given two updates of record a and one of b.
        let updates = vec![
            json!({"id": "a", "n": 1}),
            json!({"id": "b"}),
            json!({"id": "a", "n": 2}),
        ];
        // When they are put in waves.
        let waves = waves(updates);
        // Then a's second update waits for the next wave.
        assert_eq!(
            waves,
            [
                vec![json!({"id": "a", "n": 1}), json!({"id": "b"})],
                vec![json!({"id": "a", "n": 2})]
            ]
        );
    }

    #[test]
    fn a_zoho_page_adds_the_records_after_the_last_imported_each_once() {
        // Given a page that repeats a record, holds one already imported and one without id.
        let page = vec![
            json!({"id": "100"}),
            json!({"id": "099"}),
            json!({"id": "101"}),
            json!({"id": "101"}),
            json!({"name": "no id"}),
        ];
        // When it follows record 100, and when it is the first.
        let (after, newest) = fresh_records(&page, Some("100"));
        let (first, from_start) = fresh_records(&page, None);
        // Then only 101 is added, once, and becomes the newest; from the start, every record
        // with an id is added once and the newest is the largest id (compared as numbers).
        assert_eq!(after, [&page[2]]);
        assert_eq!(newest.as_deref(), Some("101"));
        assert_eq!(first, [&page[0], &page[1], &page[2]]);
        assert_eq!(from_start.as_deref(), Some("101"));
        // And an empty page keeps the last id.
        assert_eq!(fresh_records(&[], Some("7")), (Vec::new(), Some("7".to_owned())));
    }
}
