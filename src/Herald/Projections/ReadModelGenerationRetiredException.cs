namespace Herald.Projections;

/// <summary>
/// A unit of work wrote a generation of a read model older than the one that serves reads: a runner that a rebuild (on
/// this node or another) left behind. The commit throws it and writes nothing, so a retired generation is never written, nor
/// its dropped table made again; the projection's runner starts again on the generation that serves.
/// </summary>
public sealed class ReadModelGenerationRetiredException : HeraldException
{
    /// <summary>Creates the exception for a write of <paramref name="generation"/> of <paramref name="table"/>.</summary>
    public ReadModelGenerationRetiredException(string table, int generation, int activeGeneration)
        : base($"Generation {generation} of read model '{table}' is retired: generation {activeGeneration} serves reads. This unit of work wrote nothing.")
    {
        Table = table;
        Generation = generation;
        ActiveGeneration = activeGeneration;
    }

    /// <summary>The read-model table.</summary>
    public string Table { get; }

    /// <summary>The generation the unit of work tried to write.</summary>
    public int Generation { get; }

    /// <summary>The generation that serves reads.</summary>
    public int ActiveGeneration { get; }
}
