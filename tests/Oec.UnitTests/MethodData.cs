// Theory data over the OEC methods, from the enum: a new method is tested by every theory that takes them all.
namespace Oec.UnitTests;

public static class MethodData
{
    public static TheoryData<OecMethod> All() => Of(Enum.GetValues<OecMethod>());

    public static TheoryData<OecMethod> AllBut(OecMethod excluded) => Of(Enum.GetValues<OecMethod>().Where(m => m != excluded));

    static TheoryData<OecMethod> Of(IEnumerable<OecMethod> methods)
    {
        var data = new TheoryData<OecMethod>();
        foreach (var method in methods) data.Add(method);
        return data;
    }
}
