// torch keeps global state (the random generator, the thread pool) and Console is global: one test at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
