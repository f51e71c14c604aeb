// torch keeps global state (the random generator, the grad mode): run the tests one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
