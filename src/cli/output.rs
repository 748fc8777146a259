//! Writing what commands report: JSON documents (serialised from the
//! library's report types) and the warnings every command shares.

use diskvault::repo::Damaged;
use serde::Serialize;

use super::human::size;

/// What mends damaged index files, as warnings say it.
pub const REINDEX: &str = "'diskvault repair REPO --index' rebuilds the index from the packs";

/// Says, on standard error, which objects a command went on without.
pub fn damaged_warnings(damaged: &[Damaged], what: &str, next: &str) {
    for d in damaged {
        note!(
            "warning: {} cannot be read ({}); {what} went on without it. {next}",
            d.object,
            d.reason
        );
    }
}

/// What one remote repository's requests cost, in a command's JSON.
#[derive(Serialize)]
struct RemoteRequests<'a> {
    repository: &'a str,
    #[serde(flatten)]
    counts: &'a diskvault::store::RequestCounts,
}

/// Prints `report` as one line of JSON on standard output. An object gains
/// `requests`, what each remote repository the command used cost (when
/// there is one); spec/JSON.md documents every command's document.
pub fn print_json<T: Serialize + ?Sized>(report: &T) {
    let mut value = match serde_json::to_value(report) {
        Ok(v) => v,
        Err(e) => {
            // Only a map with non-string keys fails; none of ours has one.
            note!("error: cannot write the report as JSON: {e}");
            return;
        }
    };
    let remotes = super::remote_requests();
    if let (serde_json::Value::Object(map), false) = (&mut value, remotes.is_empty()) {
        let list: Vec<RemoteRequests> = remotes
            .iter()
            .map(|(name, counts)| RemoteRequests {
                repository: name,
                counts,
            })
            .collect();
        if let Ok(list) = serde_json::to_value(list) {
            map.insert("requests".into(), list);
        }
    }
    out!("{value}");
}

/// One line on what a remote repository cost: requests and bytes.
pub fn requests_line(name: &str, r: &diskvault::store::RequestCounts) -> String {
    format!(
        "requests to {name}: {} GET, {} PUT, {} LIST, {} DELETE, {} HEAD; {} sent, {} received",
        r.get,
        r.put,
        r.list,
        r.delete,
        r.head,
        size(r.bytes_sent),
        size(r.bytes_received)
    )
}
