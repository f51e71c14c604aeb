// Whole jobs take the machine's cores, torch keeps global state and Console is global: one test at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
