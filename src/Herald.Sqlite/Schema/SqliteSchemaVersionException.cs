namespace Herald.Sqlite.Schema;

/// <summary>Thrown at start when the SQLite file was written by a newer Herald.Sqlite, whose schema this version does not know.</summary>
/// <param name="dataSource">The file that was opened.</param>
/// <param name="fileVersion">The schema version recorded in the file.</param>
/// <param name="supportedVersion">The newest schema version this code knows.</param>
public sealed class SqliteSchemaVersionException(string dataSource, long fileVersion, long supportedVersion)
    : HeraldException(
        $"The SQLite file '{dataSource}' has Herald schema version {fileVersion}, but this Herald.Sqlite knows versions up to {supportedVersion}. " +
        "It was written by a newer Herald.Sqlite; upgrade the package. Nothing was changed in the file.")
{
    /// <summary>The file that was opened.</summary>
    public string DataSource { get; } = dataSource;

    /// <summary>The schema version recorded in the file.</summary>
    public long FileVersion { get; } = fileVersion;

    /// <summary>The newest schema version this code can work with.</summary>
    public long SupportedVersion { get; } = supportedVersion;
}
