using System.Security.Cryptography;
using System.Text;
using Herald.Sqlite.Schema;

namespace Herald.Sqlite.Tests.Schema;

/// <summary>
/// A released migration is never edited: files created by an earlier release hold the SQL it ran, and a new file must get the
/// same. The hashes were taken from the SQL as released; the SQL may be built differently (shared column lists), not changed.
/// </summary>
public sealed class ShippedMigrationTests
{
    private static readonly Dictionary<long, string> Released = new()
    {
        [1] = "AE9797A4389E3582706AD5E86C569BFFEB74B75B6688F45348BA62F344173B2E",
        [2] = "8B1358C08C39609491B780855468E8A181C7DAE1011C2A61D88C11CD039D0625",
        [3] = "49A2AC6EA9DB43666ED2E4108EE0D27A41E5081B1634D1DC50B99F12C42C6206",
        [4] = "36B18D7813D20EDD495666625F37E1CDDEC27942BD618EB2A9A6421BBE6E2FC8",
        [5] = "F684AC14ED81A0DB19D3BE85875E71BD136FD928ECED94AECCA2F9F330AB53BB",
        [6] = "925C7D739304C4436F7E285246FB9071A45E73A6021A3ED49ED050518D47BBEB",
        [7] = "1B529BAFF4684DEF5DEA96354A1237317981EC1B7A370CE84003F0FB8918FDDC",
        [8] = "801B48EBEE9740DF09A8191C4A9A72BF4E89967CB3A73A4D61519027235CFD2D",
        [9] = "F0807F06D2FDC4067E096C7BDA7579456FB518D7D092D025FAD83E0AB5B6E03A",
    };

    [Fact]
    public void ReleasedMigrations_RunTheSqlTheyRanWhenReleased()
    {
        var actual = SqliteSchema.Migrations.ToDictionary(m => m.Version, m => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(m.Sql))));
        Assert.True(
            Released.Count > 0 && Released.All(r => actual.GetValueOrDefault(r.Key) == r.Value),
            "Released migrations changed: " + string.Join(", ", actual.Select(a => $"[{a.Key}] = \"{a.Value}\"")));
    }
}
