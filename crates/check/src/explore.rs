//! Exhaustive exploration of a `stateright` [`Model`], keeping the *first* discovery of every
//! property.
//!
//! stateright 0.31's own BFS checker overwrites a property's discovery each time it meets
//! another violating state, so the path it reports is not the shortest; and it stops expanding
//! a state once every property has a discovery, so its state counts depend on the properties.
//! This explorer walks the same [`Model`] (same actions, same properties) breadth-first or
//! depth-first over the whole reachable state space, records for each property the first state
//! that discovers it — under BFS, one at the least depth — and rebuilds the path from parent
//! links. States are deduplicated by a 64-bit fingerprint, as stateright does.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use stateright::{Expectation, Model};

use crate::run::Search;

/// A path: each state with the action taken from it (`None` for the last state).
pub type Trail<M> = Vec<(<M as Model>::State, Option<<M as Model>::Action>)>;

/// What an exploration found.
pub struct Exploration<M: Model> {
    /// Distinct states reached.
    pub states: usize,
    /// Greatest depth of a state (BFS: distance from the initial state).
    pub max_depth: usize,
    /// For each discovered property (by name): the actions from the initial state to the
    /// discovering state, with the states they lead through (first = initial state).
    pub discoveries: HashMap<&'static str, Trail<M>>,
}

fn fingerprint<T: Hash>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A node of the search tree: its parent and the index of the action that led to it.
#[derive(Clone, Copy)]
struct Node {
    parent: u32,
    action: u32,
    depth: u32,
}

const ROOT: u32 = u32::MAX;

/// Explores every state of `model` reachable from its initial states. `progress` is called
/// with the number of states seen so far every few thousand states.
pub fn explore<M>(model: &M, search: Search, mut progress: impl FnMut(usize)) -> Exploration<M>
where
    M: Model,
    M::State: Hash + Clone,
    M::Action: Clone,
{
    let properties = model.properties();
    let mut found: HashMap<&'static str, u32> = HashMap::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut frontier: VecDeque<(M::State, u32)> = VecDeque::new();

    for (i, init) in model.init_states().into_iter().enumerate() {
        if seen.insert(fingerprint(&init)) {
            nodes.push(Node {
                parent: ROOT,
                action: i as u32,
                depth: 0,
            });
            frontier.push_back((init, (nodes.len() - 1) as u32));
        }
    }

    let mut max_depth = 0;
    let mut actions = Vec::new();
    while let Some((state, id)) = match search {
        Search::Bfs => frontier.pop_front(),
        Search::Dfs => frontier.pop_back(),
    } {
        max_depth = max_depth.max(nodes[id as usize].depth as usize);
        for p in &properties {
            if found.contains_key(p.name) {
                continue;
            }
            let discovered = match p.expectation {
                Expectation::Always => !(p.condition)(model, &state),
                Expectation::Sometimes => (p.condition)(model, &state),
                // Liveness needs terminal states, which crashes and timeouts make meaningless
                // here; the models state everything as safety over quiescent states.
                Expectation::Eventually => false,
            };
            if discovered {
                found.insert(p.name, id);
            }
        }

        actions.clear();
        model.actions(&state, &mut actions);
        for (index, action) in actions.drain(..).enumerate() {
            let Some(next) = model.next_state(&state, action) else {
                continue;
            };
            if !model.within_boundary(&next) {
                continue;
            }
            if !seen.insert(fingerprint(&next)) {
                continue;
            }
            nodes.push(Node {
                parent: id,
                action: index as u32,
                depth: nodes[id as usize].depth + 1,
            });
            frontier.push_back((next, (nodes.len() - 1) as u32));
            if nodes.len().is_multiple_of(4096) {
                progress(nodes.len());
            }
        }
    }

    let discoveries = found
        .into_iter()
        .map(|(name, id)| (name, rebuild(model, &nodes, id)))
        .collect();
    Exploration {
        states: nodes.len(),
        max_depth,
        discoveries,
    }
}

/// Replays the action indices from the root to node `id`.
fn rebuild<M>(model: &M, nodes: &[Node], id: u32) -> Trail<M>
where
    M: Model,
    M::State: Clone,
    M::Action: Clone,
{
    let mut indices = Vec::new();
    let mut at = id;
    while nodes[at as usize].parent != ROOT {
        indices.push(nodes[at as usize].action as usize);
        at = nodes[at as usize].parent;
    }
    indices.reverse();
    let init_index = nodes[at as usize].action as usize;
    let mut state = model.init_states()[init_index].clone();
    let mut path = Vec::new();
    for index in indices {
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        let action = actions[index].clone();
        let next = model
            .next_state(&state, action.clone())
            .expect("a recorded transition replays");
        path.push((state, Some(action)));
        state = next;
    }
    path.push((state, None));
    path
}
