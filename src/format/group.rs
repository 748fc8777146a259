//! Chunk groups (format 2): several chunks sealed as one blob, so that
//! neighbouring chunks are compressed together while each keeps its own id
//! and dedup stays at the chunk size.
//!
//! The plaintext of a group names its members, so a group proves which
//! chunk sits where (its tag authenticates the list) and can be moved to
//! another pack or repository without the key:
//!
//! | field | bytes |
//! |---|---|
//! | member count M (u32 LE), 1 to [`MAX_GROUP_MEMBERS`] | 4 |
//! | M members: chunk id (32), plaintext length (u32 LE) | 36 each |
//! | the members' plaintexts, back to back, in that order | the sum |
//!
//! A pack table or index entry of a grouped chunk gives the group's place
//! in its pack and the chunk's *member offset*: where its plaintext starts
//! inside the group's plaintext.

use super::bytes::{ByteReader, PutBytes};
use super::{ChunkId, FormatError};

/// Associated-data label of every sealed group.
pub const GROUP_AAD: &[u8] = b"diskvault chunk group";
/// Most members one group may hold.
pub const MAX_GROUP_MEMBERS: usize = 1 << 16;
/// Encoded size of one member of the header.
pub const GROUP_MEMBER_LEN: usize = 36;
/// The member offset that marks a chunk sealed alone (format 1): its
/// sealed blob is the chunk itself, with the chunk id as associated data.
pub const SOLE: u32 = u32::MAX;

/// Length of the header of a group of `members` chunks.
pub fn header_len(members: usize) -> usize {
    4 + members * GROUP_MEMBER_LEN
}

/// Builds a group's plaintext: header, then each member's bytes.
pub fn encode_group(members: &[(ChunkId, &[u8])]) -> Vec<u8> {
    let total: usize = members.iter().map(|(_, d)| d.len()).sum();
    let mut v = Vec::with_capacity(header_len(members.len()) + total);
    v.put_u32(members.len() as u32);
    for (id, data) in members {
        v.extend_from_slice(&id.0);
        v.put_u32(data.len() as u32);
    }
    for (_, data) in members {
        v.extend_from_slice(data);
    }
    v
}

/// The member offsets a group of chunks of these lengths gives them, in
/// order.
pub fn member_offsets(lengths: impl Iterator<Item = usize> + Clone) -> Vec<u32> {
    let n = lengths.clone().count();
    let mut at = header_len(n);
    lengths
        .map(|len| {
            let here = at as u32;
            at += len;
            here
        })
        .collect()
}

/// One member of a group, as its header lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMember {
    /// The member chunk's id.
    pub id: ChunkId,
    /// Where its plaintext starts in the group's plaintext.
    pub offset: u32,
    /// Length of its plaintext, in bytes.
    pub length: u32,
}

/// Decodes a group's header, checking that the members' plaintexts fill
/// the rest of the group exactly.
pub fn decode_members(plain: &[u8]) -> Result<Vec<GroupMember>, FormatError> {
    let mut r = ByteReader::new(plain, "chunk group");
    let n = r.count_u32(MAX_GROUP_MEMBERS, GROUP_MEMBER_LEN)?;
    if n == 0 {
        return Err(r.invalid("has no members"));
    }
    let mut at = header_len(n) as u64;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = ChunkId(r.array()?);
        let length = r.u32()?;
        if length == 0 {
            return Err(r.invalid("has an empty member"));
        }
        out.push(GroupMember {
            id,
            offset: at as u32,
            length,
        });
        at += length as u64;
        if at > plain.len() as u64 {
            return Err(r.invalid("members are longer than the group"));
        }
    }
    if at != plain.len() as u64 {
        return Err(r.invalid("bytes follow the last member"));
    }
    Ok(out)
}

/// The bytes of chunk `id` in a group's plaintext, after checking that the
/// group's header lists it at `offset` with `length` bytes.
pub fn member<'a>(
    plain: &'a [u8],
    id: &ChunkId,
    offset: u32,
    length: u32,
) -> Result<&'a [u8], FormatError> {
    let members = decode_members(plain)?;
    let found = members
        .binary_search_by_key(&offset, |m| m.offset)
        .map_err(|_| FormatError::Invalid {
            what: "chunk group",
            reason: format!("no member starts at offset {offset}"),
        })?;
    let m = members[found];
    if m.id != *id || m.length != length {
        return Err(FormatError::Invalid {
            what: "chunk group",
            reason: format!(
                "the member at offset {offset} is chunk {} of {} bytes, not chunk {} of {length}",
                m.id.short(),
                m.length,
                id.short()
            ),
        });
    }
    Ok(&plain[m.offset as usize..(m.offset + m.length) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_are_checked() {
        let a = vec![1u8; 100];
        let b = vec![2u8; 7];
        let (ia, ib) = (ChunkId([1; 32]), ChunkId([2; 32]));
        let plain = encode_group(&[(ia, &a), (ib, &b)]);
        let offs = member_offsets([100usize, 7].into_iter());
        assert_eq!(offs, vec![76, 176]);
        assert_eq!(member(&plain, &ia, 76, 100).unwrap(), &a[..]);
        assert_eq!(member(&plain, &ib, 176, 7).unwrap(), &b[..]);
        // Wrong id, wrong length, wrong offset.
        assert!(member(&plain, &ib, 76, 100).is_err());
        assert!(member(&plain, &ia, 76, 99).is_err());
        assert!(member(&plain, &ia, 77, 100).is_err());
        // A byte more or less than the members cover.
        let mut longer = plain.clone();
        longer.push(0);
        assert!(decode_members(&longer).is_err());
        assert!(decode_members(&plain[..plain.len() - 1]).is_err());
        // A huge count is refused before allocating.
        assert!(decode_members(&[0xff, 0xff, 0xff, 0x7f]).is_err());
        assert!(decode_members(&[0, 0, 0, 0]).is_err());
    }
}
