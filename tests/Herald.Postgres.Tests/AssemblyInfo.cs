// The classes share one PostgreSQL server whose visibility horizon is cluster-wide: a test that holds a transaction open
// on purpose would slow every other class down, so the classes run one after another.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
