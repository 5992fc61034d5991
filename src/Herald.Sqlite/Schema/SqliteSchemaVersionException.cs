namespace Herald.Sqlite.Schema;

/// <summary>Thrown at start when the SQLite file was written by a newer Herald.Sqlite, whose schema this version does not know.</summary>
public sealed class SqliteSchemaVersionException : HeraldException
{
    /// <summary>Creates the exception naming the file, its schema version and the newest version this code knows.</summary>
    public SqliteSchemaVersionException(string dataSource, long fileVersion, long supportedVersion)
        : base($"The SQLite file '{dataSource}' has Herald schema version {fileVersion}, but this Herald.Sqlite knows versions up to {supportedVersion}. " +
               "It was written by a newer Herald.Sqlite; upgrade the package. Nothing was changed in the file.")
    {
        DataSource = dataSource;
        FileVersion = fileVersion;
        SupportedVersion = supportedVersion;
    }

    /// <summary>The file that was opened.</summary>
    public string DataSource { get; }

    /// <summary>The schema version recorded in the file.</summary>
    public long FileVersion { get; }

    /// <summary>The newest schema version this code can work with.</summary>
    public long SupportedVersion { get; }
}
