namespace Herald.Sqlite.Tests;

/// <summary>Database files a test makes as it goes (one per store its hosts share), all deleted when it ends.</summary>
internal sealed class OwnedFiles : IDisposable
{
    private readonly List<TempDatabase> _files = [];

    public string New()
    {
        var file = new TempDatabase();
        _files.Add(file);
        return file.Path;
    }

    public void Dispose()
    {
        foreach (var file in _files)
        {
            file.Dispose();
        }
    }
}
