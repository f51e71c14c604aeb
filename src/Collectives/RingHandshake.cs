// The handshake of one ring link, authenticated with the job token in both directions.
using System.Buffers.Binary;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Collectives;

/// <summary>
/// The three messages of a link from a connecting rank C to an accepting rank A (little-endian int32s):
/// <list type="number">
/// <item>C to A, hello: magic, C's rank, world size, group key length, group key (UTF-8), nonce C (32 bytes).</item>
/// <item>A to C, challenge: nonce A (32 bytes), HMAC-SHA256(token, 'A' | nonce C | group key | A's rank).</item>
/// <item>C to A, proof: HMAC-SHA256(token, 'C' | nonce A | group key | C's rank).</item>
/// </list>
/// Fresh nonces make a recorded proof worthless; the tags 'A' and 'C' keep an acceptor's proof from passing as a
/// connector's. Proofs are compared in constant time. A peer without the job token learns nothing but the nonces.
/// </summary>
internal sealed class RingHandshake(string groupKey, int rank, int worldSize, string token)
{
    private const int Magic = 0x52_49_4E_32; // "RIN2": the authenticated handshake
    private const int NonceBytes = 32;
    private const int MacBytes = 32;           // HMAC-SHA256
    private const int MaxGroupKeyBytes = 1 << 16;

    private readonly byte[] key = Encoding.UTF8.GetBytes(token);
    private readonly byte[] group = Encoding.UTF8.GetBytes(groupKey);

    /// <summary>Connecting side, step 1: sends the hello to the next rank; returns nonce C for <see cref="Prove"/>.</summary>
    public byte[] SendHello(Socket s, int next, string endpoint)
    {
        var nonce = RandomNumberGenerator.GetBytes(NonceBytes);
        var buf = new byte[16 + group.Length + NonceBytes];
        BinaryPrimitives.WriteInt32LittleEndian(buf, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(buf.AsSpan(4), rank);
        BinaryPrimitives.WriteInt32LittleEndian(buf.AsSpan(8), worldSize);
        BinaryPrimitives.WriteInt32LittleEndian(buf.AsSpan(12), group.Length);
        group.CopyTo(buf, 16);
        nonce.CopyTo(buf, 16 + group.Length);
        Exchange(next, endpoint, () => s.Send(buf));
        return nonce;
    }

    /// <summary>Connecting side, step 3: reads the next rank's challenge, checks that it holds the job token, answers
    /// with this rank's proof. Throws naming the peer and the group when it does not.</summary>
    public void Prove(Socket s, byte[] helloNonce, int next, string endpoint)
    {
        var challenge = new byte[NonceBytes + MacBytes];
        Exchange(next, endpoint, () => ReceiveExactly(s, challenge));
        if (!CryptographicOperations.FixedTimeEquals(challenge.AsSpan(NonceBytes), Mac('A', helloNonce, next)))
            throw new CollectiveException($"rank {rank} of group '{groupKey}': rank {next} at {endpoint} did not prove the job token "
                + "(another job token, or not a rank of this job); connection refused");
        var proof = Mac('C', challenge.AsSpan(0, NonceBytes), rank);
        Exchange(next, endpoint, () => s.Send(proof));
    }

    /// <summary>Accepting side, step 2: null when the hello names (this group, this world size, the previous rank),
    /// with nonce C in <paramref name="helloNonce"/>; otherwise what was wrong.</summary>
    public string? ReadHello(Socket s, int prev, out byte[] helloNonce)
    {
        helloNonce = [];
        var head = new byte[16];
        ReceiveExactly(s, head);
        var magic = BinaryPrimitives.ReadInt32LittleEndian(head);
        int peerRank = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(4)), peerWorld = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(8));
        var length = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(12));
        if (magic != Magic || length is < 0 or > MaxGroupKeyBytes) return $"connection from {s.RemoteEndPoint} is not a ring peer";
        var rest = new byte[length + NonceBytes];
        ReceiveExactly(s, rest);
        var peerGroup = Encoding.UTF8.GetString(rest, 0, length);
        if (peerGroup != groupKey || peerRank != prev || peerWorld != worldSize)
            return $"{s.RemoteEndPoint} says rank {peerRank} of {peerWorld} in group '{peerGroup}', expected rank {prev} of {worldSize} in '{groupKey}'";
        helloNonce = rest[length..];
        return null;
    }

    /// <summary>Accepting side, step 2: proves the token to the connecting rank; returns nonce A for <see cref="CheckProof"/>.</summary>
    public byte[] SendChallenge(Socket s, byte[] helloNonce)
    {
        var nonce = RandomNumberGenerator.GetBytes(NonceBytes);
        s.Send([.. nonce, .. Mac('A', helloNonce, rank)]);
        return nonce;
    }

    /// <summary>Accepting side, step 3: null when the previous rank proved the job token; otherwise what was wrong.</summary>
    public string? CheckProof(Socket s, byte[] challengeNonce, int prev)
    {
        var proof = new byte[MacBytes];
        ReceiveExactly(s, proof);
        return CryptographicOperations.FixedTimeEquals(proof, Mac('C', challengeNonce, prev)) ? null
            : $"{s.RemoteEndPoint}, claiming rank {prev} of group '{groupKey}', did not prove the job token";
    }

    public static void ReceiveExactly(Socket s, Span<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            var n = s.Receive(bytes);
            if (n == 0) throw new EndOfStreamException("connection closed during handshake");
            bytes = bytes[n..];
        }
    }

    // HMAC-SHA256(token, tag | nonce | group key | rank as int32).
    private byte[] Mac(char tag, ReadOnlySpan<byte> nonce, int signer)
    {
        var message = new byte[1 + nonce.Length + group.Length + 4];
        message[0] = (byte)tag;
        nonce.CopyTo(message.AsSpan(1));
        group.CopyTo(message, 1 + nonce.Length);
        BinaryPrimitives.WriteInt32LittleEndian(message.AsSpan(message.Length - 4), signer);
        return HMACSHA256.HashData(key, message);
    }

    // Socket failures and an early close on the connecting side, named by peer and group.
    private void Exchange(int peer, string endpoint, Action io)
    {
        try { io(); }
        catch (Exception e) when (e is SocketException or EndOfStreamException)
        {
            var why = e is SocketException se ? se.SocketErrorCode.ToString() : "it closed the connection (a different group, rank or world size?)";
            throw new CollectiveException($"rank {rank} of group '{groupKey}': handshake with rank {peer} at {endpoint} failed: {why}", e);
        }
    }
}
