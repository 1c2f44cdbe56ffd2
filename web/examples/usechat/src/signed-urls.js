// Fresh signed URLs from the app's own backend: the browser never holds a long-lived credential, and every request
// (send, reconnect, stop) gets a short-lived URL signed for exactly that route and conversation.
export function signedUrlSource(backend) {
  return async function signedUrl(purpose, chatId) {
    const response = await fetch(backend, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ purpose, chatId }),
    });
    if (!response.ok) throw new Error(`the backend refused a ${purpose} URL (${response.status})`);
    const { url } = await response.json();
    return url;
  };
}
