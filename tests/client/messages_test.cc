// bitsclient's refusal messages (issue 19): every refusal gets a sentence a person understands plus
// its status and BITS-Error-Code, chosen from the status, code, context, packet and whether the
// client sent credentials.
#include <gtest/gtest.h>

#include "core/protocol.h"
#include "tools/client/messages.h"

namespace bitsd::client {
namespace {

Response answer(int status, uint32_t code = 0, uint32_t context = 5) {
  Response r;
  r.status = status;
  if (code != 0) {
    r.hasErrorCode = true;
    r.errorCode = code;
    r.errorContext = context;
  }
  return r;
}

TEST(ClientMessages, EveryRefusalHasItsSentenceAndCodes) {
  struct Case {
    Response r;
    Kind packet;
    bool credentials;
    const char* expected;
  } cases[] = {
      {answer(403, hresult::kAccessDenied), Kind::CreateSession, false,
       "the file exists and the server does not allow overwrites (403, 0x80070005)"},
      {answer(403, hresult::kAccessDenied), Kind::CreateSession, true,
       "the server refused this upload here: the file exists and the server does not allow overwrites, or you "
       "may not upload to this path (403, 0x80070005)"},
      {answer(404, hresult::kPathNotFound), Kind::CreateSession, false,
       "the destination directory does not exist on the server (404, 0x80070003)"},
      {answer(500, hresult::kTooLarge), Kind::CreateSession, false,
       "the file is larger than the server allows (500, 0x80200020)"},
      {answer(500, hresult::kSessionNotFound), Kind::Fragment, false,
       "the server no longer knows this upload session (it expired or was cancelled); starting over (500, "
       "0x8020001F)"},
      {answer(401), Kind::Ping, false, "the server wants a user name and password (-u NAME:PASSWORD) (401)"},
      {answer(401, hresult::kAccessDenied), Kind::Ping, true,
       "the server refused the user name and password given (401, 0x80070005)"},
      {answer(413), Kind::Fragment, false, "the server refuses even the smallest fragments (5 KB) (413)"},
      {answer(503, hresult::kBusy), Kind::Fragment, false, "the server is busy (503, 0x800700AA)"},
      {answer(503, hresult::kNoSystemResources), Kind::CreateSession, false,
       "the server holds too many sessions (for you: max-sessions-per-user, or in all) (503, 0x800705AA)"},
      {answer(411), Kind::Fragment, false, "the server wants a Content-Length on every request (411)"},
      {answer(400, hresult::kInvalidArg), Kind::Fragment, false,
       "the server found the request malformed (400, 0x80070057)"},
      {answer(505), Kind::Ping, false, "the server does not speak this HTTP version (505)"},
      {answer(404, hresult::kHttpErrorBase + 404, 7), Kind::Fragment, false,
       "the server's application answered 404 (404, 0x80190194)"},
      {answer(408, hresult::kTimeout, 7), Kind::Fragment, false,
       "the server's application did not answer in time (408, 0x800705B4)"},
      {answer(500, hresult::kInternal), Kind::Fragment, false,
       "the server failed internally (its log says why) (500, 0x8007054F)"},
      {answer(502), Kind::Fragment, false, "the server had a problem (it answered 502) (502)"},
      {answer(418), Kind::Fragment, false, "the server refused the request (it answered 418) (418)"},
  };
  for (const Case& k : cases) {
    EXPECT_EQ(refusalMessage(k.r, k.packet, k.credentials), k.expected);
  }
}

TEST(ClientMessages, TheContextDecidesWhoseAnswerItWas) {
  // The same 404 from bitsd (context 0x5, its HRESULT) and from the application (context 0x7).
  EXPECT_EQ(refusalSentence(answer(404, hresult::kPathNotFound, 5), Kind::CreateSession, false),
            "the destination directory does not exist on the server");
  EXPECT_EQ(refusalSentence(answer(500, hresult::kHttpErrorBase + 500, 7), Kind::Fragment, false),
            "the server's application answered 500");
  // 403 after the upload (the final fragment's commit) is not "you may not upload here".
  EXPECT_NE(refusalSentence(answer(403, hresult::kAccessDenied), Kind::Fragment, true).find("appeared"),
            std::string::npos);
}

TEST(ClientMessages, CodesAreStatusAndHresult) {
  EXPECT_EQ(refusalCodes(answer(403, hresult::kAccessDenied)), "(403, 0x80070005)");
  EXPECT_EQ(refusalCodes(answer(411)), "(411)");
}

}  // namespace
}  // namespace bitsd::client
