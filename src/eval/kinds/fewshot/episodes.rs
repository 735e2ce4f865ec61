//! Episodes: sampled (paired across columns) or replayed from a JSONL or CSV file.

use super::spec::Column;
use crate::data::{image_key, LabelledImages};
use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// One image of an episode: its key in the data set (file name, or index in the test split
/// for IDX data) and its class name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shot {
    pub image: String,
    pub label: String,
}

/// An episode, replayable from its JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    pub ways: usize,
    pub induction: bool,
    pub shots: usize,
    pub repeats: usize,
    /// Index within its cell.
    pub index: usize,
    /// The class names, in the order the induction sentence names them.
    pub classes: Vec<String>,
    /// Support examples in prompt order (the whole list is shown 1 + `repeats` times).
    pub support: Vec<Shot>,
    pub query: Shot,
    /// With `episodes.names = "nonsense"`: the real class names behind `classes`, in order
    /// (the labels of `support` and `query` are then the nonsense words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

/// The words Frozen's Open-Ended protocol stands for (its benchmark's own list is not published
/// with the paper): fixed, pronounceable non-words, none an English word nor a class name of
/// the data sets here (the nonce words of word-learning studies: dax, blicket, wug, ...).
pub const NONSENSE_WORDS: &[&str] = &[
    "dax", "blicket", "wug", "toma", "fep", "zav", "modi", "tufa", "gazzer", "zorb", "pilk",
    "fendle", "jick", "lorp", "tepper", "wadge", "nort", "glorp", "snarp", "kiv", "blick", "mep",
    "teebu", "zopp",
];

/// Frozen's open-ended naming: each episode's classes renamed to nonsense words drawn for it
/// (the same for the paired episodes of every column: same ways, shots and index), the real
/// names kept in `names`. Episodes that already carry names (replayed) are left as they are.
pub fn name_nonsense(episodes: &mut [Episode], seed: u64) -> Result<()> {
    for e in episodes.iter_mut().filter(|e| e.names.is_none()) {
        if e.classes.len() > NONSENSE_WORDS.len() {
            return Err(Error::setting(
                "episodes.names",
                format!(
                    "{}-way episodes need more than the {} nonsense words",
                    e.ways,
                    NONSENSE_WORDS.len()
                ),
            ));
        }
        let mut rng = Rng::derive(
            seed,
            &format!("names/{}-way/shots-{}", e.ways, e.shots),
            e.index as u64,
        );
        let perm = rng.permutation(NONSENSE_WORDS.len());
        let map: HashMap<String, String> = e
            .classes
            .iter()
            .zip(&perm)
            .map(|(c, &k)| (c.clone(), NONSENSE_WORDS[k].to_string()))
            .collect();
        let rename = |s: &mut Shot| s.label = map[&s.label].clone();
        e.support.iter_mut().for_each(rename);
        rename(&mut e.query);
        e.names = Some(e.classes.clone());
        e.classes = e.classes.iter().map(|c| map[c].clone()).collect();
    }
    Ok(())
}

impl Episode {
    pub fn column(&self) -> Column {
        Column {
            induction: self.induction,
            shots: self.shots,
            repeats: self.repeats,
        }
    }
    pub fn cell(&self) -> String {
        format!("{}-way/{}", self.ways, self.column().name())
    }
}

/// Sample episodes from `pool` (indices into `set`). Episodes with the same ways, shots and
/// index share their images whatever the induction and repeats, so columns are paired.
pub fn sample_episodes(
    set: &LabelledImages,
    pool: &[usize],
    ways: &[usize],
    columns: &[Column],
    count: usize,
    seed: u64,
) -> Result<Vec<Episode>> {
    let n_classes = set.class_names.len();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for &i in pool {
        by_class[set.labels[i] as usize].push(i);
    }
    let mut out = Vec::new();
    for &w in ways {
        for col in columns {
            let usable: Vec<usize> = (0..n_classes)
                .filter(|&c| by_class[c].len() > col.shots)
                .collect();
            if usable.len() < w {
                return Err(Error::setting(
                    "episodes",
                    format!(
                        "{w}-way {}-shot episodes need {w} classes with at least {} images each; the pool has {} such classes (raise data.test_limit)",
                        col.shots,
                        col.shots + 1,
                        usable.len()
                    ),
                ));
            }
            for e in 0..count {
                let mut rng = Rng::derive(seed, &format!("{w}-way/shots-{}", col.shots), e as u64);
                let perm = rng.permutation(usable.len());
                let classes: Vec<usize> = perm[..w].iter().map(|&k| usable[k]).collect();
                let q_class = classes[rng.below(w)];
                let mut support = Vec::new();
                let mut query = None;
                for &c in &classes {
                    let imgs = &by_class[c];
                    let p = rng.permutation(imgs.len());
                    for &k in &p[..col.shots] {
                        support.push(imgs[k]);
                    }
                    if c == q_class {
                        query = Some(imgs[p[col.shots]]);
                    }
                }
                let order = rng.permutation(support.len());
                let shot = |i: usize| Shot {
                    image: image_key(set, i),
                    label: set.class_names[set.labels[i] as usize].clone(),
                };
                out.push(Episode {
                    ways: w,
                    induction: col.induction,
                    shots: col.shots,
                    repeats: col.repeats,
                    index: e,
                    classes: classes
                        .iter()
                        .map(|&c| set.class_names[c].clone())
                        .collect(),
                    support: order.iter().map(|&k| shot(support[k])).collect(),
                    query: shot(query.expect("the query class is one of the classes")),
                    names: None,
                });
            }
        }
    }
    Ok(out)
}

/// Episodes from a CSV file in long form, header `episode,role,image,label,induction,repeats`:
/// one row per image, `role` `support` (in prompt order) or `query` (one per episode),
/// `induction` `true`/`false`, `repeats` the extra showings of the support set. The classes
/// are the support labels in order of first appearance; shots = supports / classes. Returns
/// `(line of the episode's first row, episode)`.
pub fn parse_episode_csv(text: &str) -> std::result::Result<Vec<(usize, Episode)>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let want = ["episode", "role", "image", "label", "induction", "repeats"];
    let (_, head) = lines.next().ok_or("the file is empty")?;
    let cols: Vec<&str> = head.split(',').map(str::trim).collect();
    if cols != want {
        return Err(format!(
            "line 1: the header must be `{}`, found `{head}`",
            want.join(",")
        ));
    }
    let mut order: Vec<String> = Vec::new();
    let mut rows: HashMap<String, (usize, Vec<[String; 5]>)> = HashMap::new();
    for (n, l) in lines {
        let f: Vec<String> = l.split(',').map(|x| x.trim().to_string()).collect();
        let [id, role, image, label, ind, rep] = f.as_slice() else {
            return Err(format!(
                "line {}: {} fields, 6 expected (commas inside a field are not supported)",
                n + 1,
                f.len()
            ));
        };
        if !rows.contains_key(id) {
            order.push(id.clone());
        }
        rows.entry(id.clone())
            .or_insert((n + 1, Vec::new()))
            .1
            .push([
                role.clone(),
                image.clone(),
                label.clone(),
                ind.clone(),
                rep.clone(),
            ]);
    }
    let mut per_cell: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for id in order {
        let (line, rs) = &rows[&id];
        let bad = |m: String| format!("episode `{id}` (line {line}): {m}");
        let ind = match rs[0][3].as_str() {
            "true" | "yes" | "1" => true,
            "false" | "no" | "0" => false,
            x => return Err(bad(format!("induction `{x}` is not true/false"))),
        };
        let repeats: usize = rs[0][4]
            .parse()
            .map_err(|_| bad(format!("repeats `{}` is not a count", rs[0][4])))?;
        if rs.iter().any(|r| r[3] != rs[0][3] || r[4] != rs[0][4]) {
            return Err(bad("induction and repeats differ between its rows".into()));
        }
        let shot = |r: &[String; 5]| Shot {
            image: r[1].clone(),
            label: r[2].clone(),
        };
        let support: Vec<Shot> = rs.iter().filter(|r| r[0] == "support").map(shot).collect();
        let queries: Vec<Shot> = rs.iter().filter(|r| r[0] == "query").map(shot).collect();
        if let Some(r) = rs.iter().find(|r| r[0] != "support" && r[0] != "query") {
            return Err(bad(format!("role `{}` is not support or query", r[0])));
        }
        let [query] = queries.as_slice() else {
            return Err(bad(format!("{} query rows, 1 expected", queries.len())));
        };
        let mut classes: Vec<String> = Vec::new();
        for s in &support {
            if !classes.contains(&s.label) {
                classes.push(s.label.clone());
            }
        }
        if classes.is_empty() || !support.len().is_multiple_of(classes.len()) {
            return Err(bad(format!(
                "{} support rows do not give every one of its {} classes the same number of shots",
                support.len(),
                classes.len()
            )));
        }
        let mut ep = Episode {
            ways: classes.len(),
            induction: ind,
            shots: support.len() / classes.len(),
            repeats,
            index: 0,
            classes,
            support,
            query: query.clone(),
            names: None,
        };
        let k = per_cell.entry(ep.cell()).or_insert(0);
        ep.index = *k;
        *k += 1;
        out.push((*line, ep));
    }
    Ok(out)
}

/// Episodes from a JSONL file (one episode per line, as runs write `episodes.jsonl`) or a CSV
/// file (`.csv`, see [`parse_episode_csv`]), checked against the data set.
pub fn read_episodes(path: &Path, set: &LabelledImages) -> Result<Vec<Episode>> {
    let bytes = crate::util::untrusted::read_bounded(path, 256 << 20, "episode file")?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::file(path, format!("the episode file is not UTF-8 text: {e}")))?;
    let keys: HashMap<String, usize> = (0..set.len()).map(|i| (image_key(set, i), i)).collect();
    let parsed: Vec<(usize, Episode)> = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        parse_episode_csv(&text).map_err(|m| Error::file(path, m))?
    } else {
        let mut v = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let ep: Episode = serde_json::from_str(line)
                .map_err(|e| Error::file(path, format!("line {}: not an episode: {e}", n + 1)))?;
            v.push((n + 1, ep));
        }
        v
    };
    let mut out = Vec::new();
    for (line, ep) in parsed {
        let n = line - 1;
        if ep.ways != ep.classes.len() || ep.support.len() != ep.ways * ep.shots {
            return Err(Error::file(path, format!("line {line}: a {}-way {}-shot episode needs {} classes and {} support images, it has {} and {}", ep.ways, ep.shots, ep.ways, ep.ways * ep.shots, ep.classes.len(), ep.support.len())));
        }
        for s in ep.support.iter().chain(std::iter::once(&ep.query)) {
            let i = *keys.get(&s.image).ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "line {}: image `{}` is not in the data set's test split",
                        n + 1,
                        s.image
                    ),
                )
            })?;
            let truth = &set.class_names[set.labels[i] as usize];
            if truth != &s.label {
                return Err(Error::file(path, format!("line {}: image `{}` is labelled `{}` here but `{truth}` in the data set (a different data set or split?)", n + 1, s.image, s.label)));
            }
            if !ep.classes.contains(&s.label) {
                return Err(Error::file(
                    path,
                    format!(
                        "line {}: label `{}` is not among the episode's classes",
                        n + 1,
                        s.label
                    ),
                ));
            }
        }
        out.push(ep);
    }
    if out.is_empty() {
        return Err(Error::file(path, "holds no episodes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_episodes_parse_and_bad_rows_are_named() {
        let csv = "episode,role,image,label,induction,repeats\n\
                   e1,support,a.jpg,lion,true,1\n\
                   e1,support,b.jpg,vase,true,1\n\
                   e1,query,c.jpg,vase,true,1\n\
                   e2,support,d.jpg,lion,false,0\n\
                   e2,support,e.jpg,lion,false,0\n\
                   e2,support,f.jpg,vase,false,0\n\
                   e2,support,g.jpg,vase,false,0\n\
                   e2,query,h.jpg,lion,false,0\n";
        let eps = parse_episode_csv(csv).unwrap();
        assert_eq!(eps.len(), 2);
        let (line, e) = &eps[0];
        assert_eq!(
            (*line, e.ways, e.shots, e.repeats, e.induction),
            (2, 2, 1, 1, true)
        );
        assert_eq!(e.classes, vec!["lion".to_string(), "vase".to_string()]);
        assert_eq!(e.query.image, "c.jpg");
        assert_eq!(
            (eps[1].1.shots, eps[1].1.cell()),
            (2, "2-way/induction-no/shots-2/repeats-0".to_string())
        );
        let err = parse_episode_csv(
            "episode,role,image,label,induction,repeats\nx,support,a,lion,true,0\n",
        )
        .unwrap_err();
        assert!(
            err.contains("episode `x`") && err.contains("0 query rows"),
            "{err}"
        );
        let err = parse_episode_csv("id,role,image\n").unwrap_err();
        assert!(err.contains("header"), "{err}");
        let err = parse_episode_csv("episode,role,image,label,induction,repeats\nx,support,a,lion,maybe,0\nx,query,b,lion,maybe,0\n").unwrap_err();
        assert!(err.contains("induction `maybe`"), "{err}");
    }
}
