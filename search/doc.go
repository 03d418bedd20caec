// Package search is the in-memory repository search index of a node:
// `docker search` (/v1/search) and /api/v1/search answer from it.
//
// Every node derives its index from the replicated state (the node
// package builds it at start and after a snapshot restore, and updates it
// as commands apply), so every node answers alike. The index holds, per
// repository, its name, description, flags and counters; it knows nothing
// of users: a query brings a visibility predicate for private
// repositories, which the index calls only on private candidates.
//
// Ranking: an exact name match first (the full name, or the part after
// the namespace), then names starting with the query, then repositories
// whose name tokens match every query token (prefixes count), then those
// matching in the description. Within a tier official repositories come
// first, then a relevance score (token quality plus log(stars) and
// log(pulls)), then the name.
//
// The package imports only the standard library and the root package; it
// must not import consensus, registryapi or node.
package search
