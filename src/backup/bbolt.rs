//! bbolt's file format, read and written: the B+tree database file etcd keeps its data in.
//!
//! Owns the page layout and nothing of etcd: two meta pages (magic 0xED0CDAED, version 2), a
//! freelist page, branch and leaf pages (with overflow pages for nodes larger than a page), and
//! buckets: the root bucket the meta page points to, nested buckets, and small buckets stored
//! inline in their parent's leaf. A database is handled whole, in memory, as a [`Bucket`] tree.
//!
//! Page layout (all integers little-endian, as bbolt writes them on x86/arm):
//! - page header (16 bytes): id u64, flags u16 (branch 0x01, leaf 0x02, meta 0x04,
//!   freelist 0x10), count u16, overflow u32 (extra pages that follow this one);
//! - leaf element (16 bytes): flags u32 (0x01: the value is a bucket), pos u32 (from the element
//!   to its key), key size u32, value size u32; the value follows the key;
//! - branch element (16 bytes): pos u32, key size u32, child page id u64;
//! - meta (at offset 16 of pages 0 and 1): magic, version, page size, flags (u32 each), root
//!   bucket (root page u64, sequence u64), freelist page u64, page count u64, txid u64, then an
//!   FNV-1a 64 checksum of the 56 bytes before it;
//! - bucket value: root page u64 and sequence u64; a root of 0 means the bucket's leaf page
//!   follows inline.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::error::{Error, Result};

/// The page size raftkine writes (bbolt's default on Linux, and what etcd's files use).
pub const PAGE_SIZE: usize = 4096;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BUCKET_HEADER: usize = 16;
const META_CHECKSUMMED: usize = 56;

const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const META_PAGE: u16 = 0x04;
const FREELIST_PAGE: u16 = 0x10;
const BUCKET_LEAF: u32 = 0x01;

/// A bucket: its sequence counter and its items in key order (keys are unique).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    pub sequence: u64,
    items: Vec<(Vec<u8>, Item)>,
}

/// What a key of a bucket holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Value(Vec<u8>),
    Bucket(Bucket),
}

impl Bucket {
    pub fn new() -> Bucket {
        Bucket::default()
    }

    /// Items in key order.
    pub fn items(&self) -> &[(Vec<u8>, Item)] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<&Item> {
        self.items
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()
            .map(|i| &self.items[i].1)
    }

    /// The value under `key`, when it is a value.
    pub fn value(&self, key: &[u8]) -> Option<&[u8]> {
        match self.get(key) {
            Some(Item::Value(v)) => Some(v),
            _ => None,
        }
    }

    /// The nested bucket `name`, when there is one.
    pub fn bucket(&self, name: &[u8]) -> Option<&Bucket> {
        match self.get(name) {
            Some(Item::Bucket(b)) => Some(b),
            _ => None,
        }
    }

    /// Sets `key` (cheap when keys come in increasing order).
    pub fn insert(&mut self, key: Vec<u8>, item: Item) {
        if self.items.last().is_none_or(|(last, _)| *last < key) {
            self.items.push((key, item));
            return;
        }
        match self.items.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.items[i].1 = item,
            Err(i) => self.items.insert(i, (key, item)),
        }
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.insert(key.into(), Item::Value(value.into()));
    }

    pub fn put_bucket(&mut self, name: impl Into<Vec<u8>>, bucket: Bucket) {
        self.insert(name.into(), Item::Bucket(bucket));
    }
}

fn corrupt(why: impl std::fmt::Display) -> Error {
    Error::BadSnapshot(format!("bbolt: {why}"))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or_else(|| corrupt("truncated page"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| corrupt("truncated page"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| corrupt("truncated page"))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The fields of a meta page bbolt's readers use.
#[derive(Debug, Clone, Copy)]
struct Meta {
    page_size: usize,
    root: u64,
    root_sequence: u64,
    page_count: u64,
    txid: u64,
}

/// Parses the meta at `offset` (a page start); None when it is not a valid meta page.
fn parse_meta(data: &[u8], offset: usize) -> Option<Meta> {
    let m = data.get(offset + PAGE_HEADER..offset + PAGE_HEADER + META_CHECKSUMMED + 8)?;
    let flags = u16_at(data, offset + 8).ok()?;
    if flags != META_PAGE
        || u32_at(m, 0).ok()? != MAGIC
        || u32_at(m, 4).ok()? != VERSION
        || u64_at(m, META_CHECKSUMMED).ok()? != fnv1a64(&m[..META_CHECKSUMMED])
    {
        return None;
    }
    let page_size = u32_at(m, 8).ok()? as usize;
    if !page_size.is_power_of_two() || !(512..=1 << 20).contains(&page_size) {
        return None;
    }
    Some(Meta {
        page_size,
        root: u64_at(m, 16).ok()?,
        root_sequence: u64_at(m, 24).ok()?,
        page_count: u64_at(m, 40).ok()?,
        txid: u64_at(m, 48).ok()?,
    })
}

/// Reads a whole database: its root bucket.
pub fn read(data: &[u8]) -> Result<Bucket> {
    let first = parse_meta(data, 0);
    let page_size = first.map_or(PAGE_SIZE, |m| m.page_size);
    let second = parse_meta(data, page_size);
    let meta = match (first, second) {
        (Some(a), Some(b)) => {
            if b.txid > a.txid {
                b
            } else {
                a
            }
        }
        (Some(m), None) | (None, Some(m)) => m,
        (None, None) => return Err(corrupt("no valid meta page (not a bbolt database?)")),
    };
    let mut reader = Reader {
        data,
        page_size: meta.page_size,
        page_count: meta.page_count,
        visited: HashSet::new(),
    };
    let mut root = Bucket {
        sequence: meta.root_sequence,
        items: vec![],
    };
    reader.read_tree(meta.root, &mut root.items)?;
    Ok(root)
}

struct Reader<'a> {
    data: &'a [u8],
    page_size: usize,
    page_count: u64,
    /// Pages already read: each page belongs to one node, so a second visit is corruption (and
    /// would loop forever on a cycle).
    visited: HashSet<u64>,
}

/// A page (with its overflow pages) or an inline bucket's page.
struct Page<'a> {
    bytes: &'a [u8],
    flags: u16,
    count: usize,
}

impl<'a> Page<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Page<'a>> {
        Ok(Page {
            flags: u16_at(bytes, 8)?,
            count: usize::from(u16_at(bytes, 10)?),
            bytes,
        })
    }

    /// Leaf element `i`: (flags, key, value).
    fn leaf(&self, i: usize) -> Result<(u32, &'a [u8], &'a [u8])> {
        let at = PAGE_HEADER + i * ELEMENT;
        let flags = u32_at(self.bytes, at)?;
        let pos = u32_at(self.bytes, at + 4)? as usize;
        let ksize = u32_at(self.bytes, at + 8)? as usize;
        let vsize = u32_at(self.bytes, at + 12)? as usize;
        let start = at + pos;
        let key = self
            .bytes
            .get(start..start + ksize)
            .ok_or_else(|| corrupt("leaf key outside its page"))?;
        let value = self
            .bytes
            .get(start + ksize..start + ksize + vsize)
            .ok_or_else(|| corrupt("leaf value outside its page"))?;
        Ok((flags, key, value))
    }

    /// Branch element `i`: (first key of the child, child page).
    fn branch(&self, i: usize) -> Result<(&'a [u8], u64)> {
        let at = PAGE_HEADER + i * ELEMENT;
        let pos = u32_at(self.bytes, at)? as usize;
        let ksize = u32_at(self.bytes, at + 4)? as usize;
        let child = u64_at(self.bytes, at + 8)?;
        let key = self
            .bytes
            .get(at + pos..at + pos + ksize)
            .ok_or_else(|| corrupt("branch key outside its page"))?;
        Ok((key, child))
    }
}

impl<'a> Reader<'a> {
    fn page(&mut self, id: u64) -> Result<Page<'a>> {
        if id < 2 || id >= self.page_count {
            return Err(corrupt(format!("page {id} out of range")));
        }
        if !self.visited.insert(id) {
            return Err(corrupt(format!("page {id} is referenced twice")));
        }
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or_else(|| corrupt("page id overflow"))?;
        let header = self
            .data
            .get(start..start + PAGE_HEADER)
            .ok_or_else(|| corrupt(format!("page {id} beyond the end of the file")))?;
        if u64_at(header, 0)? != id {
            return Err(corrupt(format!("page {id} has another id")));
        }
        let overflow = u32_at(header, 12)? as usize;
        let len = (overflow + 1)
            .checked_mul(self.page_size)
            .ok_or_else(|| corrupt("overflow count"))?;
        let bytes = self
            .data
            .get(start..start + len)
            .ok_or_else(|| corrupt(format!("page {id} runs past the end of the file")))?;
        for extra in 1..=overflow as u64 {
            self.visited.insert(id + extra);
        }
        Page::parse(bytes)
    }

    /// Appends the items of the subtree rooted at page `id` to `out`, in key order.
    fn read_tree(&mut self, id: u64, out: &mut Vec<(Vec<u8>, Item)>) -> Result<()> {
        let page = self.page(id)?;
        match page.flags {
            BRANCH_PAGE => {
                for i in 0..page.count {
                    let (_, child) = page.branch(i)?;
                    self.read_tree(child, out)?;
                }
                Ok(())
            }
            LEAF_PAGE => self.read_leaf(&page, out),
            other => Err(corrupt(format!(
                "page {id} has flags {other:#x}, expected a branch or leaf"
            ))),
        }
    }

    fn read_leaf(&mut self, page: &Page<'a>, out: &mut Vec<(Vec<u8>, Item)>) -> Result<()> {
        for i in 0..page.count {
            let (flags, key, value) = page.leaf(i)?;
            if out.last().is_some_and(|(last, _)| last.as_slice() >= key) {
                return Err(corrupt("keys out of order"));
            }
            let item = if flags & BUCKET_LEAF != 0 {
                Item::Bucket(self.read_bucket(value)?)
            } else {
                Item::Value(value.to_vec())
            };
            out.push((key.to_vec(), item));
        }
        Ok(())
    }

    fn read_bucket(&mut self, value: &'a [u8]) -> Result<Bucket> {
        let root = u64_at(value, 0).map_err(|_| corrupt("short bucket header"))?;
        let mut bucket = Bucket {
            sequence: u64_at(value, 8).map_err(|_| corrupt("short bucket header"))?,
            items: vec![],
        };
        if root == 0 {
            let page = Page::parse(&value[BUCKET_HEADER..])?;
            if page.flags != LEAF_PAGE {
                return Err(corrupt("inline bucket is not a leaf"));
            }
            self.read_leaf(&page, &mut bucket.items)?;
        } else {
            self.read_tree(root, &mut bucket.items)?;
        }
        Ok(bucket)
    }
}

/// Writes a whole database whose root bucket is `root`: meta pages 0 and 1, an empty freelist
/// at page 2, then the tree. The result is what bbolt's `Tx.WriteTo` produces for such a
/// database: page count × page size bytes.
pub fn write(root: &Bucket) -> Result<Vec<u8>> {
    let mut w = Writer {
        out: vec![0; 3 * PAGE_SIZE],
    };
    let root_page = w.write_tree(root)?;
    let page_count = (w.out.len() / PAGE_SIZE) as u64;
    // The freelist: empty, as every page is in use.
    let freelist = 2 * PAGE_SIZE;
    w.out[freelist..freelist + 8].copy_from_slice(&2u64.to_le_bytes());
    w.out[freelist + 8..freelist + 10].copy_from_slice(&FREELIST_PAGE.to_le_bytes());
    for (page, txid) in [(0u64, 1u64), (1, 2)] {
        let at = page as usize * PAGE_SIZE;
        let mut meta = Vec::with_capacity(META_CHECKSUMMED + 8);
        meta.extend_from_slice(&MAGIC.to_le_bytes());
        meta.extend_from_slice(&VERSION.to_le_bytes());
        meta.extend_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        meta.extend_from_slice(&0u32.to_le_bytes());
        meta.extend_from_slice(&root_page.to_le_bytes());
        meta.extend_from_slice(&root.sequence.to_le_bytes());
        meta.extend_from_slice(&2u64.to_le_bytes());
        meta.extend_from_slice(&page_count.to_le_bytes());
        meta.extend_from_slice(&txid.to_le_bytes());
        let sum = fnv1a64(&meta);
        meta.extend_from_slice(&sum.to_le_bytes());
        w.out[at..at + 8].copy_from_slice(&page.to_le_bytes());
        w.out[at + 8..at + 10].copy_from_slice(&META_PAGE.to_le_bytes());
        w.out[at + PAGE_HEADER..at + PAGE_HEADER + meta.len()].copy_from_slice(&meta);
    }
    Ok(w.out)
}

struct Writer {
    out: Vec<u8>,
}

/// A leaf element about to be written: (flags, key, value).
type LeafElement<'a> = (u32, &'a [u8], Cow<'a, [u8]>);

/// Bytes of a node: header, elements, then keys and values.
fn leaf_node(elements: &[LeafElement<'_>]) -> Vec<u8> {
    let size = PAGE_HEADER
        + elements
            .iter()
            .map(|(_, k, v)| ELEMENT + k.len() + v.len())
            .sum::<usize>();
    let mut b = vec![0u8; size];
    b[8..10].copy_from_slice(&LEAF_PAGE.to_le_bytes());
    b[10..12].copy_from_slice(&(elements.len() as u16).to_le_bytes());
    let mut data = PAGE_HEADER + elements.len() * ELEMENT;
    for (i, (flags, k, v)) in elements.iter().enumerate() {
        let at = PAGE_HEADER + i * ELEMENT;
        b[at..at + 4].copy_from_slice(&flags.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&((data - at) as u32).to_le_bytes());
        b[at + 8..at + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
        b[at + 12..at + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
        b[data..data + k.len()].copy_from_slice(k);
        data += k.len();
        b[data..data + v.len()].copy_from_slice(v);
        data += v.len();
    }
    b
}

fn branch_node(children: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let size = PAGE_HEADER
        + children
            .iter()
            .map(|(k, _)| ELEMENT + k.len())
            .sum::<usize>();
    let mut b = vec![0u8; size];
    b[8..10].copy_from_slice(&BRANCH_PAGE.to_le_bytes());
    b[10..12].copy_from_slice(&(children.len() as u16).to_le_bytes());
    let mut data = PAGE_HEADER + children.len() * ELEMENT;
    for (i, (k, child)) in children.iter().enumerate() {
        let at = PAGE_HEADER + i * ELEMENT;
        b[at..at + 4].copy_from_slice(&((data - at) as u32).to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&(k.len() as u32).to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&child.to_le_bytes());
        b[data..data + k.len()].copy_from_slice(k);
        data += k.len();
    }
    b
}

/// Splits elements of the given sizes into runs that each fit a page (a single element larger
/// than a page gets a node of its own, written with overflow pages).
fn split(sizes: impl Iterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut runs = vec![];
    let mut start = 0;
    let mut used = PAGE_HEADER;
    let mut n = 0;
    for size in sizes {
        let full = used + ELEMENT + size > PAGE_SIZE || n - start == usize::from(u16::MAX);
        if n > start && full {
            runs.push(start..n);
            start = n;
            used = PAGE_HEADER;
        }
        used += ELEMENT + size;
        n += 1;
    }
    runs.push(start..n);
    runs
}

/// Whether bbolt would store a bucket inline in its parent: no nested buckets, and its leaf
/// no larger than a quarter page.
fn inlineable(bucket: &Bucket) -> bool {
    let mut size = PAGE_HEADER;
    for (k, item) in &bucket.items {
        match item {
            Item::Bucket(_) => return false,
            Item::Value(v) => size += ELEMENT + k.len() + v.len(),
        }
        if size > PAGE_SIZE / 4 {
            return false;
        }
    }
    true
}

impl Writer {
    /// Appends a node as its own page(s); returns its page id.
    fn place(&mut self, mut node: Vec<u8>) -> Result<u64> {
        let id = (self.out.len() / PAGE_SIZE) as u64;
        let pages = node.len().div_ceil(PAGE_SIZE).max(1);
        let overflow =
            u32::try_from(pages - 1).map_err(|_| corrupt("a value too large for a page"))?;
        node.resize(pages * PAGE_SIZE, 0);
        node[..8].copy_from_slice(&id.to_le_bytes());
        node[12..16].copy_from_slice(&overflow.to_le_bytes());
        self.out.extend_from_slice(&node);
        Ok(id)
    }

    /// The leaf elements of a bucket's items (nested buckets are written first).
    fn elements<'b>(&mut self, bucket: &'b Bucket) -> Result<Vec<LeafElement<'b>>> {
        let mut elements = Vec::with_capacity(bucket.items.len());
        let mut previous: Option<&[u8]> = None;
        for (k, item) in &bucket.items {
            if previous.is_some_and(|p| p >= k.as_slice()) {
                return Err(corrupt("bucket keys out of order"));
            }
            previous = Some(k);
            elements.push(match item {
                Item::Value(v) => (0, k.as_slice(), Cow::Borrowed(v.as_slice())),
                Item::Bucket(b) => (BUCKET_LEAF, k.as_slice(), Cow::Owned(self.bucket_value(b)?)),
            });
        }
        Ok(elements)
    }

    /// What a parent stores for a nested bucket: its header, and its leaf when inline.
    fn bucket_value(&mut self, bucket: &Bucket) -> Result<Vec<u8>> {
        let mut value = Vec::with_capacity(BUCKET_HEADER);
        if inlineable(bucket) {
            value.extend_from_slice(&0u64.to_le_bytes());
            value.extend_from_slice(&bucket.sequence.to_le_bytes());
            value.extend_from_slice(&leaf_node(&self.elements(bucket)?));
        } else {
            let root = self.write_tree(bucket)?;
            value.extend_from_slice(&root.to_le_bytes());
            value.extend_from_slice(&bucket.sequence.to_le_bytes());
        }
        Ok(value)
    }

    /// Writes a bucket's B+tree; returns the root page id.
    fn write_tree(&mut self, bucket: &Bucket) -> Result<u64> {
        let elements = self.elements(bucket)?;
        let mut level = vec![];
        for run in split(elements.iter().map(|(_, k, v)| k.len() + v.len())) {
            let first = elements
                .get(run.start)
                .map_or_else(Vec::new, |(_, k, _)| k.to_vec());
            let id = self.place(leaf_node(&elements[run]))?;
            level.push((first, id));
        }
        while level.len() > 1 {
            let mut parents = vec![];
            for run in split(level.iter().map(|(k, _)| k.len())) {
                let first = level[run.start].0.clone();
                let id = self.place(branch_node(&level[run]))?;
                parents.push((first, id));
            }
            level = parents;
        }
        level
            .pop()
            .map(|(_, id)| id)
            .ok_or_else(|| corrupt("empty tree"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, value_len: usize) -> Bucket {
        let mut b = Bucket::new();
        for i in 0..n {
            b.put(
                format!("key-{i:08}").into_bytes(),
                vec![(i % 251) as u8; value_len],
            );
        }
        b
    }

    #[test]
    fn empty_database_round_trips() {
        let root = Bucket::new();
        let bytes = write(&root).expect("write");
        assert_eq!(bytes.len(), 4 * PAGE_SIZE);
        assert_eq!(read(&bytes).expect("read"), root);
    }

    #[test]
    fn buckets_inline_and_nested_round_trip() {
        let mut root = Bucket::new();
        let mut small = Bucket::new();
        small.put(b"a".to_vec(), b"1".to_vec());
        small.sequence = 7;
        root.put_bucket(b"small".to_vec(), small);
        root.put_bucket(b"empty".to_vec(), Bucket::new());
        let mut outer = sample(50, 100);
        outer.put_bucket(b"inner".to_vec(), sample(3, 3));
        root.put_bucket(b"outer".to_vec(), outer);
        let bytes = write(&root).expect("write");
        let back = read(&bytes).expect("read");
        assert_eq!(back, root);
        assert_eq!(
            back.bucket(b"small").and_then(|b| b.value(b"a")),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn many_keys_span_branch_pages() {
        let mut root = Bucket::new();
        // ~60 keys per leaf: 30000 keys need ~500 leaves, so two branch levels.
        root.put_bucket(b"key".to_vec(), sample(30_000, 40));
        let bytes = write(&root).expect("write");
        assert!(bytes.len() > 400 * PAGE_SIZE);
        assert_eq!(read(&bytes).expect("read"), root);
    }

    #[test]
    fn large_values_use_overflow_pages() {
        let mut b = Bucket::new();
        b.put(b"big".to_vec(), vec![7u8; 3 * PAGE_SIZE + 100]);
        b.put(b"huge".to_vec(), vec![9u8; 1 << 20]);
        b.put(b"small".to_vec(), b"x".to_vec());
        let mut root = Bucket::new();
        root.put_bucket(b"values".to_vec(), b);
        let bytes = write(&root).expect("write");
        assert_eq!(read(&bytes).expect("read"), root);
    }

    #[test]
    fn meta_checksum_and_corruption_are_detected() {
        let mut root = Bucket::new();
        root.put_bucket(b"key".to_vec(), sample(500, 10));
        let mut bytes = write(&root).expect("write");
        // Breaking one meta page: the other one is used.
        bytes[PAGE_SIZE + 20] ^= 1;
        assert_eq!(read(&bytes).expect("read with one meta"), root);
        bytes[20] ^= 1;
        assert!(read(&bytes).is_err(), "both metas broken");
        assert!(read(b"not a database").is_err());
        // Truncated: pages missing.
        let good = write(&root).expect("write");
        assert!(read(&good[..good.len() - PAGE_SIZE]).is_err());
    }
}
