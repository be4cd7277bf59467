/* The hello app in C with libfcgi, for context numbers: served under spawn-fcgi. */
#include <fcgiapp.h>

int main(void) {
    FCGX_Request request;
    if (FCGX_Init() != 0) return 1;
    if (FCGX_InitRequest(&request, 0, 0) != 0) return 1;
    while (FCGX_Accept_r(&request) >= 0) {
        FCGX_PutS("Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello\n", request.out);
        FCGX_Finish_r(&request);
    }
    return 0;
}
